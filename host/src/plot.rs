//! Draws wait-time distributions as a self-contained SVG (no plotting
//! dependency: a few rectangles and labels): one histogram panel per run, on
//! one shared logarithmic axis, so that runs compare at a glance.

use std::fmt::Write as _;
use std::time::Duration;

use crate::contend::{percentile, Report};

const WIDTH: f64 = 720.0;
const MARGIN: f64 = 56.0;
/// Above the first panel: the title.
const HEAD: f64 = 44.0;
/// Each panel: its bars, then the axis labels and its name below them.
const PANEL: f64 = 150.0;
const BARS: f64 = 96.0;
const BINS: usize = 48;

/// One run's waits, sorted, under its name.
pub struct Series<'a> {
    pub name: &'a str,
    pub waits: &'a [Duration],
}

/// The waits of one `contend` run.
pub fn wait_histogram(report: &Report) -> String {
    let c = &report.config;
    let title = format!(
        "uuidlock contend: wait before holding the lock ({} processes x {}, hold {:?})",
        c.processes, c.iterations, c.hold
    );
    wait_histograms(&title, &[Series { name: c.runner_name(), waits: &report.waits() }])
}

/// Histograms of each series' waits, in milliseconds on a logarithmic axis
/// (waits under contention span four decades and more), with p50, p99 and
/// the longest wait marked.
pub fn wait_histograms(title: &str, series: &[Series]) -> String {
    let ms = |wait: &Duration| wait.as_secs_f64() * 1e3;
    let all = || series.iter().flat_map(|s| s.waits.iter().map(ms));
    // From the decade below the shortest wait (at least 1 µs) to the decade above the longest.
    let shortest = all().fold(f64::INFINITY, f64::min).clamp(1e-3, 1e6);
    let longest = all().fold(0.0, f64::max).max(shortest * 10.0);
    let (lo, hi) = (shortest.log10().floor(), longest.log10().ceil());
    let position = |ms: f64| ((ms.max(1e-3).log10() - lo) / (hi - lo)).clamp(0.0, 1.0);
    let plot_w = WIDTH - 2.0 * MARGIN;
    let x = |ms: f64| MARGIN + position(ms) * plot_w;

    let height = HEAD + PANEL * series.len() as f64 + 24.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (index, run) in series.iter().enumerate() {
        let top = HEAD + PANEL * index as f64;
        let base = top + BARS;
        let mut counts = [0usize; BINS];
        for wait in run.waits {
            let bin = (position(ms(wait)) * BINS as f64) as usize;
            counts[bin.min(BINS - 1)] += 1;
        }
        let tallest = counts.iter().copied().max().unwrap_or(0).max(1);
        let bar_w = plot_w / BINS as f64;
        for (bin, &count) in counts.iter().enumerate().filter(|(_, &count)| count > 0) {
            let h = count as f64 / tallest as f64 * BARS;
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#4a7bd0"><title>{count}</title></rect>"##,
                MARGIN + bin as f64 * bar_w,
                base - h,
                (bar_w - 1.0).max(1.0),
            );
        }
        let _ =
            writeln!(svg, r#"<line x1="{MARGIN}" y1="{base}" x2="{}" y2="{base}" stroke="black"/>"#, WIDTH - MARGIN);
        let _ = writeln!(svg, r#"<line x1="{MARGIN}" y1="{base}" x2="{MARGIN}" y2="{top}" stroke="black"/>"#);
        let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="end">{tallest}</text>"#, MARGIN - 6.0, top + 10.0);
        let _ = writeln!(svg, r#"<text x="{}" y="{base}" text-anchor="end">0</text>"#, MARGIN - 6.0);
        for decade in lo as i32..=hi as i32 {
            let at = 10f64.powi(decade);
            let _ = writeln!(svg, r#"<text x="{:.1}" y="{}" text-anchor="middle">{at}</text>"#, x(at), base + 16.0);
        }
        let longest = run.waits.last().map_or(0.0, ms);
        let _ = writeln!(
            svg,
            r#"<text x="{MARGIN}" y="{}" font-weight="bold">{}</text><text x="{}" y="{}" text-anchor="end">wait, ms (log scale); {} acquisitions, longest {longest:.2} ms</text>"#,
            base + 34.0,
            escape(run.name),
            WIDTH - MARGIN,
            base + 34.0,
            run.waits.len()
        );
        // The longest wait too: a tail of one or two is too short a bar to see.
        let marks = [("p50", 0.50, "#2a9d3a", 12.0), ("p99", 0.99, "#d0492a", 26.0), ("max", 1.0, "#555555", 40.0)];
        for (label, q, colour, row) in marks {
            let at = ms(&percentile(run.waits, q));
            let _ = writeln!(
                svg,
                r#"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{base}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{1:.1}" y="{2}" fill="{colour}">{label} {at:.2} ms</text>"#,
                x(at),
                x(at) + 4.0,
                top + row
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// Text for SVG: names may hold `&` or `<`.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_gets_a_panel_with_its_name_and_bars() {
        let fast: Vec<Duration> = (1..=50).map(Duration::from_micros).collect();
        let slow = [Duration::from_millis(5), Duration::from_secs(3)];
        let svg = wait_histograms(
            "t",
            &[Series { name: "fast & fair", waits: &fast }, Series { name: "slow", waits: &slow }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains(">fast &amp; fair</text>") && svg.contains(">slow</text>"));
        assert!(svg.contains("longest 3000.00 ms"));
        // 52 waits, each in one bar of its panel.
        let counted: usize =
            svg.split("<title>").skip(1).map(|bar| bar.split('<').next().unwrap().parse::<usize>().unwrap()).sum();
        assert_eq!(counted, 52);
    }
}
