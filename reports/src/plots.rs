//! The charts of a report, drawn with plotters to PNG (bitmap backend) and
//! SVG. Text is drawn with the DejaVu Sans font shipped in `assets/`
//! (through plotters' `ab_glyph` feature), so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::ReportError;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();
/// The font family every chart's text uses (the compiled-in DejaVu Sans).
pub(crate) const FAMILY: &str = "sans-serif";

/// Registers the compiled-in font once, before any chart draws text.
pub(crate) fn ensure_font() {
    REGISTER.call_once(|| {
        // The font is compiled in and known to parse; a failure would only
        // drop the text, never crash.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Pixel size of the PNG charts (the SVGs have the same view box).
pub const SIZE: (u32, u32) = (960, 600);

/// One coloured group of points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend label.
    pub label: String,
    /// The points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// A scatter chart of a metric against cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scatter {
    /// The title.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// Feasible candidates, grouped (e.g. by groups).
    pub series: Vec<Series>,
    /// Candidates over a constraint.
    pub infeasible: Vec<(f64, f64)>,
    /// The Pareto front, joined by a line (sorted by x).
    pub front: Vec<(f64, f64)>,
    /// The chosen variant.
    pub chosen: Option<(f64, f64)>,
    /// A vertical budget line at this x.
    pub budget: Option<f64>,
    /// Published reference points with labels.
    pub reference: Vec<(f64, f64, String)>,
    /// Vertical error bars `(x, low, high)`: the 95% intervals of the
    /// points' means.
    pub error_bars: Vec<(f64, f64, f64)>,
    /// Where the legend goes (a corner the data leaves free).
    pub legend: Corner,
}

/// A corner of the plotting area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corner {
    /// Upper left.
    UpperLeft,
    /// Upper right.
    UpperRight,
    /// Lower right.
    #[default]
    LowerRight,
}

/// A bar chart (the chosen variant's cost per layer kind).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bars {
    /// The title.
    pub title: String,
    /// The y axis label.
    pub y_label: String,
    /// Category names and values.
    pub bars: Vec<(String, f64)>,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
];
const FRONT: RGBColor = RGBColor(214, 39, 40);
const GREY: RGBColor = RGBColor(170, 170, 170);

fn derr<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

fn padded(lo: f64, hi: f64, from_zero: bool) -> (f64, f64) {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let span = (hi - lo).abs().max(hi.abs() * 0.05).max(1e-9);
    let lo = if from_zero && lo >= 0.0 {
        0.0
    } else {
        lo - span * 0.08
    };
    (lo, hi + span * 0.08)
}

fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    s: &Scatter,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(derr)?;
    let all = s
        .series
        .iter()
        .flat_map(|se| se.points.iter().copied())
        .chain(s.infeasible.iter().copied())
        .chain(s.reference.iter().map(|(x, y, _)| (*x, *y)))
        .chain(
            s.error_bars
                .iter()
                .flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]),
        );
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if let Some(b) = s.budget {
        x0 = x0.min(b);
        x1 = x1.max(b);
    }
    let (x0, x1) = padded(x0, x1, true);
    let (y0, y1) = padded(y0, y1, false);
    let mut chart = ChartBuilder::on(root)
        .caption(&s.title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(derr)?;
    chart
        .configure_mesh()
        .x_desc(&s.x_label)
        .y_desc(&s.y_label)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(derr)?;
    if let Some(b) = s.budget {
        chart
            .draw_series(LineSeries::new(
                vec![(b, y0), (b, y1)],
                ShapeStyle::from(&BLACK.mix(0.6)).stroke_width(2),
            ))
            .map_err(derr)?
            .label(format!("budget {b} M"))
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6).stroke_width(2))
            });
    }
    if !s.reference.is_empty() {
        chart
            .draw_series(
                s.reference
                    .iter()
                    .map(|(x, y, _)| TriangleMarker::new((*x, *y), 7, BLACK.stroke_width(2))),
            )
            .map_err(derr)?
            .label("paper (published MFLOPs)")
            .legend(|(x, y)| TriangleMarker::new((x + 9, y), 6, BLACK.stroke_width(2)));
    }
    if !s.infeasible.is_empty() {
        chart
            .draw_series(
                s.infeasible
                    .iter()
                    .map(|&p| Cross::new(p, 4, GREY.stroke_width(1))),
            )
            .map_err(derr)?
            .label("over a constraint")
            .legend(|(x, y)| Cross::new((x + 9, y), 4, GREY.stroke_width(1)));
    }
    if !s.error_bars.is_empty() {
        let bar = BLACK.mix(0.55).stroke_width(1);
        let cap =
            |p: (f64, f64)| EmptyElement::at(p) + PathElement::new(vec![(-4, 0), (4, 0)], bar);
        chart
            .draw_series(
                s.error_bars
                    .iter()
                    .map(|&(x, lo, hi)| PathElement::new(vec![(x, lo), (x, hi)], bar)),
            )
            .map_err(derr)?
            .label("95% interval over seeds")
            .legend(move |(x, y)| PathElement::new(vec![(x + 9, y - 7), (x + 9, y + 7)], bar));
        chart
            .draw_series(s.error_bars.iter().map(|&(x, lo, _)| cap((x, lo))))
            .map_err(derr)?;
        chart
            .draw_series(s.error_bars.iter().map(|&(x, _, hi)| cap((x, hi))))
            .map_err(derr)?;
    }
    for (i, se) in s.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(se.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(derr)?
            .label(se.label.clone())
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, color.filled()));
    }
    if s.front.len() > 1 {
        chart
            .draw_series(LineSeries::new(s.front.clone(), FRONT.stroke_width(2)))
            .map_err(derr)?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], FRONT.stroke_width(2)));
    }
    if !s.front.is_empty() {
        chart
            .draw_series(
                s.front
                    .iter()
                    .map(|&p| Circle::new(p, 6, FRONT.stroke_width(2))),
            )
            .map_err(derr)?;
    }
    if let Some(c) = s.chosen {
        chart
            .draw_series(std::iter::once(Circle::new(c, 10, BLACK.stroke_width(3))))
            .map_err(derr)?
            .label("chosen")
            .legend(|(x, y)| Circle::new((x + 9, y), 6, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(match s.legend {
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
        })
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(derr)?;
    root.present().map_err(derr)
}

fn draw_bars<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, b: &Bars) -> Result<(), String> {
    root.fill(&WHITE).map_err(derr)?;
    let n = b.bars.len().max(1) as i32;
    let top = b.bars.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9) * 1.18;
    let mut chart = ChartBuilder::on(root)
        .caption(&b.title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(78)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
        .map_err(derr)?;
    let names: Vec<String> = b.bars.iter().map(|(n, _)| n.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(&b.y_label)
        .x_labels(names.len().max(1))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(225, 225, 225))
        .draw()
        .map_err(derr)?;
    chart
        .draw_series(b.bars.iter().enumerate().map(|(i, (_, v))| {
            let i = i as i32;
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                COLORS[i as usize % COLORS.len()].filled(),
            );
            r.set_margin(0, 0, 24, 24);
            r
        }))
        .map_err(derr)?;
    let total: f64 = b.bars.iter().map(|(_, v)| *v).sum::<f64>().max(1e-9);
    chart
        .draw_series(b.bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!("{v:.2} ({:.0}%)", 100.0 * v / total),
                (SegmentValue::CenterOf(i as i32), *v + top * 0.01),
                (FAMILY, 15)
                    .into_font()
                    .into_text_style(root)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))
        .map_err(derr)?;
    root.present().map_err(derr)
}

struct ScatterDraw<'a>(&'a Scatter);
struct BarsDraw<'a>(&'a Bars);

/// Draws a scatter chart to `dir/stem.png` and `dir/stem.svg`; returns the SVG.
pub fn scatter(dir: &Path, stem: &str, s: &Scatter) -> Result<String, ReportError> {
    let d = ScatterDraw(s);
    render_with(
        dir,
        stem,
        |r| draw_scatter(r, d.0),
        |r| draw_scatter(r, d.0),
    )
}

/// Draws a bar chart to `dir/stem.png` and `dir/stem.svg`; returns the SVG.
pub fn bars(dir: &Path, stem: &str, b: &Bars) -> Result<String, ReportError> {
    let d = BarsDraw(b);
    render_with(dir, stem, |r| draw_bars(r, d.0), |r| draw_bars(r, d.0))
}

fn render_with(
    dir: &Path,
    stem: &str,
    png_draw: impl Fn(&DrawingArea<BitMapBackend, Shift>) -> Result<(), String>,
    svg_draw: impl Fn(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Result<String, ReportError> {
    ensure_font();
    let png = dir.join(format!("{stem}.png"));
    {
        let root = BitMapBackend::new(&png, SIZE).into_drawing_area();
        png_draw(&root).map_err(|m| ReportError::Plot {
            path: png.clone(),
            message: m,
        })?;
    }
    let svg_path = dir.join(format!("{stem}.svg"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        svg_draw(&root).map_err(|m| ReportError::Plot {
            path: svg_path.clone(),
            message: m,
        })?;
    }
    std::fs::write(&svg_path, &svg).map_err(|source| ReportError::Io {
        path: svg_path,
        source,
    })?;
    Ok(svg)
}
