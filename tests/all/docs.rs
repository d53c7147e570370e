//! Every shell example in the README and in `docs/` is run, and its output
//! checked, so that the documentation cannot drift from what the binary
//! does.
//!
//! An example is a ```` ```console ```` block: lines that start with `$ `
//! are commands (a line ending in `\` goes on, and so do the `> ` lines of
//! a here-document), the lines after one are
//! what it prints (stdout and stderr together), and a line `? N` says it
//! exits with N (0 when there is none). In expected output `...` on a line
//! of its own stands for any number of lines, and `[..]` for any text
//! within a line. Each file's examples run in order, in one bash per
//! block, in a directory of the file's own (so that a lock taken in one
//! block is there in the next), with the `uuidlock` binary first on PATH.
//!
//! `UUIDLOCK_BLESS=1 cargo test -p uuidlock-cli --test all docs::` writes
//! what the commands printed into the files instead of checking it (for
//! writing the docs: read the result before committing it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// One `$ ` command of a block: the command, and what it is expected to
/// print and exit with.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
    code: i32,
    /// Lines of the file the expected output (and `? N`) spans.
    span: std::ops::Range<usize>,
}

/// The ```` ```console ```` blocks of a markdown text, each its steps.
fn blocks(text: &str) -> Vec<Vec<Step>> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut at = 0;
    while at < lines.len() {
        if lines[at].trim() != "```console" {
            at += 1;
            continue;
        }
        at += 1;
        let mut steps: Vec<Step> = Vec::new();
        while at < lines.len() && lines[at].trim() != "```" {
            let line = lines[at];
            if let Some(command) = line.strip_prefix("$ ") {
                let mut command = command.to_owned();
                // Continued: after a `\`, and on `> ` lines (a here-document).
                while at + 1 < lines.len() && (command.ends_with('\\') || lines[at + 1].starts_with("> ")) {
                    at += 1;
                    let next = lines[at].strip_prefix("> ").unwrap_or(lines[at]);
                    command = format!("{command}\n{next}");
                }
                steps.push(Step { command, expected: Vec::new(), code: 0, span: at + 1..at + 1 });
            } else if let Some(step) = steps.last_mut() {
                match line.strip_prefix("? ").and_then(|code| code.trim().parse().ok()) {
                    Some(code) => step.code = code,
                    None => step.expected.push(line.to_owned()),
                }
                step.span.end = at + 1;
            }
            at += 1;
        }
        blocks.push(steps);
        at += 1;
    }
    blocks
}

/// Whether `actual` matches `pattern` (`[..]` for any text).
fn line_matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == actual;
    }
    let Some(mut rest) = actual.strip_prefix(parts[0]) else { return false };
    for (i, part) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(found) => rest = &rest[found + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether the lines `actual` match the lines `expected` (`...` for any
/// number of lines).
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => {
            actual.split_first().is_some_and(|(line, others)| line_matches(first, line) && lines_match(rest, others))
        }
    }
}

/// The separator printed after each command, with its exit code.
const MARK: &str = "@@uuidlock-docs-step@@";

/// Runs a block's steps in one bash, in `dir`; each step's output and code.
fn run(steps: &[Step], dir: &Path, wasmtime: &Path) -> Vec<(String, i32)> {
    let bin = Path::new(env!("CARGO_BIN_EXE_uuidlock")).parent().unwrap().to_owned();
    let mut script = String::from("set +e\n");
    for step in steps {
        script.push_str(&format!("{{\n{}\n}} 2>&1\necho \"{MARK}$?\"\n", step.command));
    }
    let path = format!("{}:{}:{}", bin.display(), wasmtime.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", path)
        .env("TMPDIR", crate::common::scratch())
        .env("COLUMNS", "100")
        .output()
        .expect("running bash");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut results = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(MARK) {
        let out = &rest[..at];
        let after = &rest[at + MARK.len()..];
        let end = after.find('\n').unwrap_or(after.len());
        let code = after[..end].trim().parse().unwrap_or(-1);
        results.push((out.to_owned(), code));
        rest = &after[(end + 1).min(after.len())..];
    }
    results
}

/// The markdown files whose examples are run.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md")];
    let docs = root.join("docs/src");
    if let Ok(entries) = std::fs::read_dir(&docs) {
        let mut pages: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "md"))
            .collect();
        pages.sort();
        files.extend(pages);
    }
    files
}

#[test]
fn every_shell_example_in_the_docs_runs_as_shown() {
    // The examples of `wasmtime run` need the stock CLI.
    let wasmtime = match crate::common::wasmtime_cli() {
        Ok(cli) => cli.parent().unwrap().to_owned(),
        Err(why) => return crate::common::skip("every_shell_example_in_the_docs_runs_as_shown", &why),
    };
    let bless = std::env::var_os("UUIDLOCK_BLESS").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    let mut ran = 0;
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        let sandbox = crate::common::tempdir();
        let mut blessed: Vec<String> = text.lines().map(str::to_owned).collect();
        // Replacements from the end, so that earlier spans stay valid.
        let mut replacements = Vec::new();
        for steps in blocks(&text) {
            let results = run(&steps, sandbox.path(), &wasmtime);
            for (step, (out, code)) in steps.iter().zip(&results) {
                ran += 1;
                let actual: Vec<&str> = out.lines().collect();
                let ok = *code == step.code && lines_match(&step.expected, &actual);
                if bless && !ok {
                    let mut lines: Vec<String> = actual.iter().map(|line| (*line).to_owned()).collect();
                    if *code != 0 {
                        lines.push(format!("? {code}"));
                    }
                    replacements.push((step.span.clone(), lines));
                } else if !ok {
                    failures.push(format!(
                        "{}: `{}` exited {code} (expected {}) and printed:\n{out}\nexpected:\n{}",
                        file.display(),
                        step.command,
                        step.code,
                        step.expected.join("\n")
                    ));
                }
            }
            if results.len() != steps.len() {
                failures.push(format!("{}: a block stopped after {} of its steps", file.display(), results.len()));
            }
        }
        if bless && !replacements.is_empty() {
            for (span, lines) in replacements.into_iter().rev() {
                blessed.splice(span, lines);
            }
            std::fs::write(&file, blessed.join("\n") + "\n").unwrap();
        }
    }
    assert!(ran > 0, "no example ran");
    assert!(failures.is_empty(), "{} of {ran} examples differ:\n\n{}", failures.len(), failures.join("\n\n"));
}

#[test]
fn the_matcher_matches_what_it_should_and_nothing_else() {
    assert!(line_matches("token [..] fence [..]", "token abc fence 12"));
    assert!(!line_matches("token [..] fence", "token abc fence 12"));
    assert!(lines_match(&["a".into(), "...".into(), "z".into()], &["a", "b", "c", "z"]));
    assert!(!lines_match(&["a".into(), "z".into()], &["a", "b", "z"]));
    let steps = blocks("```console\n$ echo one \\\n  two\none two\n$ cat <<X\n> hi\n> X\nhi\n$ false\n? 1\n```\n");
    assert_eq!(steps.len(), 1);
    assert_eq!((steps[0][0].command.as_str(), steps[0][2].code), ("echo one \\\n  two", 1));
    assert_eq!(steps[0][1].command, "cat <<X\nhi\nX");
}

/// A heading's anchor, as mdBook and GitHub make it.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

// Every relative link of the README and the book leads to a file that is
// there, and every `#anchor` to a heading of it.
#[test]
fn every_link_in_the_docs_leads_somewhere() {
    let mut broken = Vec::new();
    let mut files = documents();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    files.push(root.join("CHANGELOG.md"));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let linked = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            if !linked.exists() {
                broken.push(format!("{}: {target} (no such file)", file.display()));
                continue;
            }
            if !fragment.is_empty() && linked.extension().is_some_and(|e| e == "md") {
                let page = std::fs::read_to_string(&linked).unwrap();
                let anchors: Vec<String> = page
                    .lines()
                    .filter_map(|line| line.strip_prefix('#'))
                    .map(|h| anchor(h.trim_start_matches('#')))
                    .collect();
                if !anchors.iter().any(|a| a == fragment) {
                    broken.push(format!("{}: {target} (no such heading)", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
