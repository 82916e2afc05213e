//! SVG plots (plotters): labelled axes with units, a legend, one colour per method.

use crate::train::EpochMetrics;
use plotters::prelude::*;

fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

/// A drawing error of the plotting library, in its words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plot: {0}")]
pub struct PlotError(pub String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// Clean (dashed) and PGD-20 (solid) test accuracy per epoch, one colour per method.
pub fn curves(model: &str, runs: &[(String, Vec<EpochMetrics>)]) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let epochs = runs
            .iter()
            .flat_map(|r| r.1.iter().map(|m| m.epoch))
            .max()
            .unwrap_or(1)
            .max(2);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{model}: test accuracy during training"),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(1f64..epochs as f64, 0f64..100f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("accuracy (%)")
            .draw()
            .map_err(err)?;
        for (i, (method, metrics)) in runs.iter().enumerate() {
            let c = colour(i);
            let clean: Vec<(f64, f64)> = metrics
                .iter()
                .map(|m| (m.epoch as f64, 100.0 * m.test_accuracy))
                .collect();
            chart
                .draw_series(DashedLineSeries::new(clean, 6, 4, c.stroke_width(2)))
                .map_err(err)?
                .label(format!("{method} clean"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(1))
                });
            let robust: Vec<(f64, f64)> = metrics
                .iter()
                .filter_map(|m| m.robust_accuracy.map(|r| (m.epoch as f64, 100.0 * r)))
                .collect();
            if !robust.is_empty() {
                chart
                    .draw_series(LineSeries::new(robust, c.stroke_width(3)))
                    .map_err(err)?
                    .label(format!("{method} PGD-20"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                    });
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Robust accuracy (PGD-20) of the best checkpoint against ε, one colour per method; the
/// training ε is marked.
pub fn eps_sweep(
    model: &str,
    train_eps: f64,
    runs: &[(String, Vec<(f64, f64)>)],
) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let max_eps = runs
            .iter()
            .flat_map(|r| r.1.iter().map(|p| p.0))
            .fold(train_eps * 2.0, f64::max)
            .max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{model}: robust accuracy against eps (PGD-20)"),
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_eps, 0f64..100f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("eps (L-inf, [0,1] pixel scale)")
            .y_desc("robust accuracy (%)")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(train_eps, 0.0), (train_eps, 100.0)],
                4,
                4,
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("training eps = {train_eps:.3}"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.5)));
        for (i, (method, pts)) in runs.iter().enumerate() {
            let c = colour(i);
            let pts: Vec<(f64, f64)> = pts.iter().map(|(e, a)| (*e, 100.0 * a)).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
                .map_err(err)?
                .label(method.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                });
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
