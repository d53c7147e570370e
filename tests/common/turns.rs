//! Processes that take turns on one lock and one counter file: each takes
//! the lock N times and, holding it, adds one to the counter, printing one
//! line per turn, `ENTER_NS EXIT_NS FENCE` (wall-clock nanoseconds while it
//! held the lock, and the acquisition's fencing number). The example
//! plugins and the cross-language workers all speak this.

use std::path::Path;
use std::process::Child;

use super::text;

/// One turn: when a process held the lock, and its fence.
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    pub enter: u128,
    pub exit: u128,
    pub fence: u64,
}

/// Waits for `children`, each of which took `turns` turns on the counter
/// at `counter`, and checks mutual exclusion: every child succeeded and
/// reported each turn, the counter is exact, no two turns overlap, and
/// fences rise turn after turn.
pub fn check(children: Vec<Child>, counter: &Path, turns: usize) {
    let processes = children.len();
    let mut all = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a process failed ({}): {}", output.status, text(&output.stderr));
        let parsed: Vec<Turn> = text(&output.stdout).lines().map(parse).collect();
        assert_eq!(parsed.len(), turns, "each process reports each turn; stderr: {}", text(&output.stderr));
        all.extend(parsed);
    }
    let counted = std::fs::read_to_string(counter).unwrap();
    assert_eq!(counted.trim().parse::<usize>().unwrap(), processes * turns, "no update was lost");
    all.sort_by_key(|turn| turn.enter);
    for pair in all.windows(2) {
        assert!(pair[0].exit <= pair[1].enter, "two processes held the lock at once: {pair:?}");
        assert!(pair[0].fence < pair[1].fence, "fences must rise turn after turn: {pair:?}");
    }
}

fn parse(line: &str) -> Turn {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [enter, exit, fence] = fields.as_slice() else { panic!("a process printed {line:?}, not ENTER EXIT FENCE") };
    let number = |field: &str| field.parse::<u128>().unwrap_or_else(|_| panic!("{field:?} in {line:?} is no number"));
    Turn { enter: number(enter), exit: number(exit), fence: number(fence) as u64 }
}
