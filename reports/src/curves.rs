//! The charts of training: the learning curves of a run (loss left,
//! accuracy right, per epoch) and trained accuracy against cost, drawn with
//! plotters to PNG and SVG in the font of the other charts
//! ([`crate::plots`]).

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use shufflekit_train::fit::{EpochStats, History};

use crate::plots::{ensure_font, FAMILY};
use crate::ReportError;

const SIZE: (u32, u32) = (1100, 450);

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    history: &History,
    title: &str,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, (FAMILY, 20)).map_err(e)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let n = history.epochs.len().max(1) as f64;
    let xs = 0.5..n + 0.5;
    let max_loss = history
        .epochs
        .iter()
        .flat_map(|s| [s.train_loss, s.test_loss, s.val_loss.unwrap_or(0.0)])
        .filter(|v| v.is_finite())
        .fold(0.1f64, f64::max)
        * 1.1;
    let mut c = ChartBuilder::on(&left)
        .margin(10)
        .caption("loss", (FAMILY, 16))
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(xs.clone(), 0.0..max_loss)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("epoch")
        .label_style((FAMILY, 12))
        .draw()
        .map_err(e)?;
    // Validation lines only for runs that held out a validation set.
    type Pick = fn(&EpochStats) -> Option<f64>;
    let points = |f: Pick| -> Vec<(f64, f64)> {
        history
            .epochs
            .iter()
            .filter_map(|s| Some((s.epoch as f64, f(s)?)))
            .collect()
    };
    let loss: [(&str, RGBColor, Pick); 3] = [
        ("train loss", BLUE, |s| Some(s.train_loss)),
        ("validation loss", GREEN, |s| s.val_loss),
        ("test loss", RED, |s| Some(s.test_loss)),
    ];
    for (label, colour, f) in loss {
        let pts = points(f);
        if pts.is_empty() {
            continue;
        }
        c.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(e)?;
    }
    c.configure_series_labels()
        .label_font((FAMILY, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    let lo = history
        .epochs
        .iter()
        .flat_map(|s| {
            [
                s.train_accuracy,
                s.test_accuracy,
                s.val_accuracy.unwrap_or(100.0),
            ]
        })
        .fold(100.0f64, f64::min);
    let lo = (lo - 2.0).clamp(0.0, 98.0).floor();
    let mut a = ChartBuilder::on(&right)
        .margin(10)
        .caption("accuracy (%)", (FAMILY, 16))
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(xs, lo..100.0)
        .map_err(e)?;
    a.configure_mesh()
        .x_desc("epoch")
        .label_style((FAMILY, 12))
        .draw()
        .map_err(e)?;
    let acc: [(&str, RGBColor, Pick); 3] = [
        ("train accuracy", BLUE, |s| Some(s.train_accuracy)),
        ("validation accuracy", GREEN, |s| s.val_accuracy),
        ("test accuracy", RED, |s| Some(s.test_accuracy)),
    ];
    for (label, colour, f) in acc {
        let pts = points(f);
        if pts.is_empty() {
            continue;
        }
        a.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        a.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(e)?;
    }
    a.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// Draws the curves to `stem.png` and `stem.svg`; returns both paths.
pub fn learning_curves(
    stem: &Path,
    history: &History,
    title: &str,
) -> Result<(PathBuf, PathBuf), ReportError> {
    ensure_font();
    let with_ext = |ext: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let (png, svg) = (with_ext(".png"), with_ext(".svg"));
    draw(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        history,
        title,
    )
    .map_err(|message| ReportError::Plot {
        path: png.clone(),
        message,
    })?;
    draw(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        history,
        title,
    )
    .map_err(|message| ReportError::Plot {
        path: svg.clone(),
        message,
    })?;
    Ok((png, svg))
}

/// One labelled group of points of [`accuracy_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct PointSeries {
    /// Legend label.
    pub label: String,
    /// `(x, y)` points.
    pub points: Vec<(f64, f64)>,
    /// A name written beside each point (may be empty).
    pub names: Vec<String>,
    /// Half-widths of each point's 95% interval, drawn as vertical error
    /// bars (empty, or one per point; 0 draws none).
    pub errors: Vec<f64>,
}

fn draw_points<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[PointSeries],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    root.fill(&WHITE).map_err(e)?;
    let bars = |s: &PointSeries| -> Vec<((f64, f64), f64)> {
        s.points
            .iter()
            .zip(&s.errors)
            .filter(|(_, &h)| h > 0.0)
            .map(|(&p, &h)| (p, h))
            .collect()
    };
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| {
            let mut v = s.points.clone();
            v.extend(
                bars(s)
                    .into_iter()
                    .flat_map(|((x, y), h)| [(x, y - h), (x, y + h)]),
            );
            v
        })
        .collect();
    let (x0, x1) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    let (y0, y1) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
    let (x0, x1) = if x0.is_finite() { (x0, x1) } else { (0.0, 1.0) };
    let (y0, y1) = if y0.is_finite() { (y0, y1) } else { (0.0, 1.0) };
    let px = ((x1 - x0) * 0.1).max(0.5);
    let py = ((y1 - y0) * 0.15).max(0.5);
    let mut c = ChartBuilder::on(&root)
        .margin(15)
        .caption(title, (FAMILY, 18))
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x0 - px..x1 + px, (y0 - py).max(0.0)..(y1 + py).min(100.5))
        .map_err(e)?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FAMILY, 12))
        .draw()
        .map_err(e)?;
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, s) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let b = bars(s);
        if !b.is_empty() {
            let style = colour.mix(0.7).stroke_width(1);
            c.draw_series(
                b.iter()
                    .map(|&((x, y), h)| PathElement::new(vec![(x, y - h), (x, y + h)], style)),
            )
            .map_err(e)?;
            for sign in [-1.0, 1.0] {
                c.draw_series(b.iter().map(|&((x, y), h)| {
                    EmptyElement::at((x, y + sign * h))
                        + PathElement::new(vec![(-4, 0), (4, 0)], style)
                }))
                .map_err(e)?;
            }
        }
        c.draw_series(s.points.iter().map(|&p| Circle::new(p, 5, colour.filled())))
            .map_err(e)?
            .label(s.label.clone())
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
        c.draw_series(
            s.points.iter().zip(&s.names).map(|(&p, name)| {
                Text::new(name.clone(), p, (FAMILY, 12).into_font().color(&colour))
            }),
        )
        .map_err(e)?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FAMILY, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// Draws points (e.g. trained accuracy against MFLOPs, one series per
/// ablation setting) to `stem.png` and `stem.svg`; returns both paths.
pub fn accuracy_chart(
    stem: &Path,
    series: &[PointSeries],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(PathBuf, PathBuf), ReportError> {
    ensure_font();
    let with_ext = |ext: &str| {
        let mut s = stem.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let (png, svg) = (with_ext(".png"), with_ext(".svg"));
    draw_points(
        BitMapBackend::new(&png, (960, 600)).into_drawing_area(),
        series,
        title,
        x_label,
        y_label,
    )
    .map_err(|message| ReportError::Plot {
        path: png.clone(),
        message,
    })?;
    draw_points(
        SVGBackend::new(&svg, (960, 600)).into_drawing_area(),
        series,
        title,
        x_label,
        y_label,
    )
    .map_err(|message| ReportError::Plot {
        path: svg.clone(),
        message,
    })?;
    Ok((png, svg))
}
