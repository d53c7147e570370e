//! Draws wait-time distributions as an SVG document: one histogram panel per
//! run, all on one shared logarithmic millisecond axis so that runs compare
//! at a glance, with p50, p99 and the longest wait marked.
//! It takes plain data (a name and sorted waits per run), so any caller can plot.
//! Drawn with plotters, which does the axes, ticks and layout; its SVG backend
//! writes text as `<text>` and needs no system fonts.

use std::time::Duration;

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::stats::percentile;

const WIDTH: u32 = 720;
/// Above the first panel: the title.
const HEAD: u32 = 40;
/// Each panel: its name, its bars, the axis labels and the axis line.
const PANEL: u32 = 200;
const BINS: usize = 48;
const BAR: RGBColor = RGBColor(0x4a, 0x7b, 0xd0);
const GREEN_MARK: RGBColor = RGBColor(0x2a, 0x9d, 0x3a);
const RED_MARK: RGBColor = RGBColor(0xd0, 0x49, 0x2a);
const GREY_MARK: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// One run's waits, sorted ascending, under its name.
pub struct Series<'a> {
    pub name: &'a str,
    pub waits: &'a [Duration],
}

/// Histograms of each series' waits, in milliseconds on a logarithmic axis
/// (waits under contention span four decades and more), with p50, p99 and
/// the longest wait marked; the SVG document.
pub fn wait_histograms(title: &str, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    let height = HEAD + PANEL * series.len() as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        draw(&root, title, series).with_context(|| format!("drawing the wait histograms {title:?}"))?;
        root.present().context("writing the wait histograms' SVG")?;
    }
    Ok(svg)
}

fn draw(root: &DrawingArea<SVGBackend, Shift>, title: &str, series: &[Series]) -> Result<()> {
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(HEAD);
    head.titled(title, ("sans-serif", 19))?;
    if series.is_empty() {
        return Ok(());
    }
    let (lo, hi) = axis(series);
    let decades = (hi / lo).log10().round() as usize;
    for (run, panel) in series.iter().zip(body.split_evenly((series.len(), 1))) {
        let counts = bin_counts(run.waits, (lo, hi));
        let tallest = counts.iter().copied().max().unwrap_or(0).max(1);
        let longest = run.waits.last().map_or(0.0, ms);
        // Headroom above the tallest bar for the marks' labels.
        let top = tallest * 3 / 2 + 1;
        let mut chart = ChartBuilder::on(&panel)
            .caption(run.name, ("sans-serif", 17, FontStyle::Bold))
            .margin_top(8)
            .margin_left(10)
            .margin_right(30)
            .x_label_area_size(40)
            .y_label_area_size(46)
            // A hair wider than the decades: plotters finds its ticks with ln()/ln(10),
            // whose rounding would otherwise drop the first or last decade's label.
            .build_cartesian_2d((lo * 0.999..hi * 1.001).log_scale(), 0..top)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            // Only the decades: more ticks crowd the labels.
            .x_labels(decades + 1)
            .x_label_formatter(&ms_label)
            .y_labels(3)
            .x_desc(format!("wait, ms (log scale); {} acquisitions, longest {longest:.2} ms", run.waits.len()))
            .draw()?;
        chart.draw_series(counts.iter().enumerate().filter(|(_, &count)| count > 0).map(|(bin, &count)| {
            let mut bar = Rectangle::new([(edge(lo, hi, bin), 0), (edge(lo, hi, bin + 1), count)], BAR.filled());
            bar.set_margin(0, 0, 0, 1); // a pixel between neighbours
            bar
        }))?;
        // The longest wait too: a tail of one or two is too short a bar to see.
        let marks = [("p50", 0.50, GREEN_MARK), ("p99", 0.99, RED_MARK), ("max", 1.0, GREY_MARK)]
            .map(|(label, q, colour)| (label, ms(&percentile(run.waits, q)), colour));
        // An empty run's ZERO has no place on a log axis.
        let x = |at: f64| at.clamp(lo, hi);
        chart.draw_series(
            marks.iter().map(|&(_, at, colour)| DashedPathElement::new([(x(at), 0), (x(at), top)], 4, 3, colour)),
        )?;
        // The labels after all the lines, so that they lie on top.
        chart.draw_series(marks.iter().zip([2, 18, 34]).map(|(&(label, at, colour), row)| {
            // Right of the line, or left of it near the right edge so that it stays on the page.
            let (anchor, dx) =
                if (x(at) / lo).log10() > 0.75 * decades as f64 { (HPos::Right, -4) } else { (HPos::Left, 4) };
            let font = ("sans-serif", 14).into_font().color(&colour).pos(Pos::new(anchor, VPos::Top));
            EmptyElement::at((x(at), top)) + Text::new(format!("{label} {at:.2} ms"), (dx, row), font)
        }))?;
    }
    Ok(())
}

/// The shared axis, in ms: from the decade below the shortest wait (at least
/// 1 µs) to the decade above the longest.
fn axis(series: &[Series]) -> (f64, f64) {
    let all = || series.iter().flat_map(|s| s.waits.iter().map(ms));
    let shortest = all().fold(f64::INFINITY, f64::min).clamp(1e-3, 1e6);
    let longest = all().fold(0.0, f64::max).max(shortest * 10.0);
    (10f64.powf(shortest.log10().floor()), 10f64.powf(longest.log10().ceil()))
}

/// How many `waits` fall in each of `BINS` log-spaced bins over `lo..hi` ms;
/// waits outside the range count in the first or last bin.
fn bin_counts(waits: &[Duration], (lo, hi): (f64, f64)) -> [usize; BINS] {
    let mut counts = [0; BINS];
    for wait in waits {
        let position = (ms(wait).max(lo) / lo).log10() / (hi / lo).log10();
        counts[((position * BINS as f64) as usize).min(BINS - 1)] += 1;
    }
    counts
}

/// The left edge of `bin`, in ms.
fn edge(lo: f64, hi: f64, bin: usize) -> f64 {
    lo * (hi / lo).powf(bin as f64 / BINS as f64)
}

fn ms(wait: &Duration) -> f64 {
    wait.as_secs_f64() * 1e3
}

/// A decade as plain decimals, "0.001" to "10000", without float noise.
fn ms_label(ms: &f64) -> String {
    format!("{ms:.0$}", (-ms.log10().round()).max(0.0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (Vec<Duration>, Vec<Duration>) {
        let fast = (1..=50).map(Duration::from_micros).collect();
        (fast, vec![Duration::from_millis(5), Duration::from_secs(3)])
    }

    #[test]
    fn every_series_gets_a_panel_with_its_name_marks_and_bars() {
        let (fast, slow) = example();
        let series = [Series { name: "fast", waits: &fast }, Series { name: "slow", waits: &slow }];
        let svg = wait_histograms("title", &series).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in ["title", "fast", "slow", "p99 0.05 ms", "max 3000.00 ms"] {
            assert!(svg.contains(&format!(">\n{text}\n</text>")), "no text {text:?}");
        }
        assert!(svg.contains("; 50 acquisitions, longest 0.05 ms\n</text>"));
        assert!(svg.contains("; 2 acquisitions, longest 3000.00 ms\n</text>"));
        // Decade labels from the decade below 1 µs to the one above 3 s.
        for label in ["0.001", "0.01", "1", "10000"] {
            assert!(svg.contains(&format!(">\n{label}\n</text>")), "no label {label}");
        }
        // Every wait counted in one bin, and one bar drawn per nonempty bin.
        let axis = axis(&series);
        let counts: Vec<_> = series.iter().map(|s| bin_counts(s.waits, axis)).collect();
        assert_eq!(counts.iter().flatten().sum::<usize>(), 52);
        let bars = counts.iter().flatten().filter(|&&count| count > 0).count();
        assert_eq!(svg.matches(r##"fill="#4A7BD0""##).count(), bars);
    }

    #[test]
    fn names_are_escaped() {
        let (fast, _) = example();
        let svg = wait_histograms("a < b", &[Series { name: "fast & <fair>", waits: &fast }]).unwrap();
        assert!(svg.contains("fast &amp; &lt;fair&gt;") && svg.contains("a &lt; b"));
        assert!(!svg.contains("& <"));
    }

    #[test]
    fn no_series_or_no_waits_still_draw() {
        assert!(wait_histograms("nothing", &[]).unwrap().contains("nothing"));
        assert!(wait_histograms("t", &[Series { name: "idle", waits: &[] }]).unwrap().contains("0 acquisitions"));
    }
}
