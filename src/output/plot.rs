//! SVG plots (plotters' SVG backend, no font files needed): line charts on linear or log axes,
//! and heatmaps of attention weights.

use std::ops::Range;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

const SIZE: (u32, u32) = (720, 440);

/// Matplotlib's "tab10": ten colours that stay apart on white, unlike a generated palette.
const TAB10: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A plot could not be drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot draw plot '{title}': {reason}")]
pub struct PlotError {
    pub title: String,
    pub reason: String,
}

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed-looking (thinner, with markers) to set a reference apart.
    pub reference: bool,
    /// Per point, the (low, high) of a vertical error bar (e.g. the spread over seeds); empty
    /// for none.
    pub errors: Vec<(f64, f64)>,
}

/// Lines sharing axes.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub log_x: bool,
    pub log_y: bool,
    pub series: Vec<Series>,
    /// Shaded spans of x, drawn behind the lines: (legend name, from, to).
    pub bands: Vec<(String, f64, f64)>,
}

impl LineChart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            series: Vec::new(),
            bands: Vec::new(),
        }
    }

    /// Shades the span of x from `from` to `to` (e.g. a window in which something happened).
    pub fn band(mut self, name: impl Into<String>, from: f64, to: f64) -> Self {
        self.bands.push((name.into(), from.min(to), from.max(to)));
        self
    }

    pub fn log_x(mut self) -> Self {
        self.log_x = true;
        self
    }

    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }

    /// Adds a line.
    pub fn line(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
            reference: false,
            errors: Vec::new(),
        });
        self
    }

    /// Adds a line with a vertical error bar (low, high) at each point.
    pub fn line_with_errors(
        mut self,
        name: impl Into<String>,
        points: Vec<(f64, f64)>,
        errors: Vec<(f64, f64)>,
    ) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
            reference: false,
            errors,
        });
        self
    }

    /// Adds a reference line (e.g. "uniform").
    pub fn reference(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series {
            name: name.into(),
            points,
            reference: true,
            errors: Vec::new(),
        });
        self
    }

    /// The chart as an SVG document. Points that a log axis cannot show (≤ 0) and non-finite
    /// points are left out.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        let shown = |&(x, y): &(f64, f64)| {
            x.is_finite() && y.is_finite() && (!self.log_x || x > 0.0) && (!self.log_y || y > 0.0)
        };
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied().filter(shown))
            .collect();
        // The error bars' ends are in range too.
        let ends: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| {
                s.points
                    .iter()
                    .zip(&s.errors)
                    .flat_map(|(&(x, _), &(lo, hi))| [(x, lo), (x, hi)])
            })
            .filter(shown)
            .collect();
        if points.is_empty() {
            return Err(self.error("no finite points to draw"));
        }
        let x = span(points.iter().map(|p| p.0), self.log_x);
        let y = span(points.iter().chain(&ends).map(|p| p.1), self.log_y);
        let legend = self.emptiest_corner(&points, &x, &y);
        let height = (y.start, y.end);
        match (self.log_x, self.log_y) {
            (false, false) => self.draw(x, y, height, legend, &shown),
            (true, false) => self.draw(x.log_scale(), y, height, legend, &shown),
            (false, true) => self.draw(x, y.log_scale(), height, legend, &shown),
            (true, true) => self.draw(x.log_scale(), y.log_scale(), height, legend, &shown),
        }
    }

    /// The corner whose box (the outer 45 % × 40 % of the plot) covers the fewest data points,
    /// so the legend hides as little as it can.
    fn emptiest_corner(
        &self,
        points: &[(f64, f64)],
        x: &Range<f64>,
        y: &Range<f64>,
    ) -> SeriesLabelPosition {
        let unit = |v: f64, r: &Range<f64>, log: bool| {
            let f = |v: f64| if log { v.ln() } else { v };
            (f(v) - f(r.start)) / (f(r.end) - f(r.start))
        };
        let unit_points: Vec<(f64, f64)> = points
            .iter()
            .map(|&(px, py)| (unit(px, x, self.log_x), unit(py, y, self.log_y)))
            .collect();
        let corners = [
            (SeriesLabelPosition::UpperRight, true, true),
            (SeriesLabelPosition::UpperLeft, false, true),
            (SeriesLabelPosition::LowerRight, true, false),
            (SeriesLabelPosition::LowerLeft, false, false),
        ];
        let covered = |right: bool, upper: bool| {
            unit_points
                .iter()
                .filter(|&&(u, v)| {
                    (if right { u > 0.55 } else { u < 0.45 })
                        && (if upper { v > 0.6 } else { v < 0.4 })
                })
                .count()
        };
        corners
            .into_iter()
            .min_by_key(|&(_, right, upper)| covered(right, upper))
            .map(|(position, _, _)| position)
            .expect("four corners")
    }

    fn draw<X, Y>(
        &self,
        x: X,
        y: Y,
        (bottom, top): (f64, f64),
        legend: SeriesLabelPosition,
        shown: &dyn Fn(&(f64, f64)) -> bool,
    ) -> Result<String, PlotError>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(|e| self.error(e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(x, y)
                .map_err(|e| self.error(e))?;
            chart
                .configure_mesh()
                .x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .x_label_formatter(&|v| short(*v))
                .y_label_formatter(&|v| short(*v))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| self.error(e))?;
            for (name, from, to) in &self.bands {
                let fill = RGBColor(255, 200, 80).mix(0.3).filled();
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(*from, bottom), (*to, top)],
                        fill,
                    )))
                    .map_err(|e| self.error(e))?
                    .label(name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 18, y + 5)], fill));
            }
            for (i, s) in self.series.iter().enumerate() {
                let color = if s.reference {
                    RGBColor(120, 120, 120).to_rgba()
                } else {
                    TAB10[i % TAB10.len()].to_rgba()
                };
                let style = ShapeStyle::from(color).stroke_width(if s.reference { 1 } else { 2 });
                let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(shown).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), style))
                    .map_err(|e| self.error(e))?
                    .label(&s.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
                if pts.len() <= 24 {
                    chart
                        .draw_series(pts.iter().map(|&p| Circle::new(p, 3, style.filled())))
                        .map_err(|e| self.error(e))?;
                }
                let bars = s
                    .points
                    .iter()
                    .zip(&s.errors)
                    .filter(|(p, e)| shown(&(p.0, e.0)) && shown(&(p.0, e.1)))
                    .map(|(&(x, y), &(lo, hi))| {
                        ErrorBar::new_vertical(x, lo, y, hi, style.stroke_width(1), 8)
                    });
                chart.draw_series(bars).map_err(|e| self.error(e))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .position(legend)
                .draw()
                .map_err(|e| self.error(e))?;
            root.present().map_err(|e| self.error(e))?;
        }
        Ok(svg)
    }

    fn error(&self, reason: impl ToString) -> PlotError {
        PlotError {
            title: self.title.clone(),
            reason: reason.to_string(),
        }
    }
}

/// The data's range with a margin: 5 % on a linear axis, a factor on a log axis.
fn span(values: impl Iterator<Item = f64>, log: bool) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if log {
        let (lo, hi) = if lo == hi {
            (lo / 2.0, hi * 2.0)
        } else {
            (lo, hi)
        };
        lo / 1.3..hi * 1.3
    } else {
        let pad = if hi > lo {
            (hi - lo) * 0.05
        } else {
            lo.abs().max(1.0) * 0.1
        };
        lo - pad..hi + pad
    }
}

/// Compact tick labels: 0.001, 12, 3.4e-7, 1.2e4.
fn short(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 || (a - a.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A matrix drawn as coloured cells, e.g. one head's attention weights (rows: queries), with
/// each cell's value written in it when the matrix is small enough to read.
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub title: String,
    pub row_label: String,
    pub col_label: String,
    /// Row-major values; rows are drawn top to bottom.
    pub values: Vec<Vec<f64>>,
    /// Tick names of the rows and columns; empty means their indices.
    pub row_names: Vec<String>,
    pub col_names: Vec<String>,
}

/// Cells are annotated with their values up to this many rows and columns.
const ANNOTATE_UP_TO: usize = 12;

impl Heatmap {
    pub fn new(
        title: impl Into<String>,
        row_label: impl Into<String>,
        col_label: impl Into<String>,
        values: Vec<Vec<f64>>,
    ) -> Self {
        Self {
            title: title.into(),
            row_label: row_label.into(),
            col_label: col_label.into(),
            values,
            row_names: Vec::new(),
            col_names: Vec::new(),
        }
    }

    /// Names the rows and the columns (e.g. the words of a sentence).
    pub fn names(mut self, rows: Vec<String>, cols: Vec<String>) -> Self {
        self.row_names = rows;
        self.col_names = cols;
        self
    }

    /// The heatmap as an SVG document; white is the smallest value, dark blue the largest.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
        let error = |reason: String| PlotError {
            title: self.title.clone(),
            reason,
        };
        let rows = self.values.len();
        let cols = self.values.first().map_or(0, Vec::len);
        if rows == 0 || cols == 0 || self.values.iter().any(|r| r.len() != cols) {
            return Err(error("the matrix is empty or ragged".into()));
        }
        for (names, n, what) in [
            (&self.row_names, rows, "row"),
            (&self.col_names, cols, "column"),
        ] {
            if !names.is_empty() && names.len() != n {
                return Err(error(format!(
                    "{} {what} names for {n} {what}s",
                    names.len()
                )));
            }
        }
        let (lo, hi) = self
            .values
            .iter()
            .flatten()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let range = if hi > lo { hi - lo } else { 1.0 };
        let name =
            |names: &[String], i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let annotate = rows <= ANNOTATE_UP_TO && cols <= ANNOTATE_UP_TO;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (560, 520)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
            let caption = format!("{} (max {}, min {})", self.title, short(hi), short(lo));
            let mut chart = ChartBuilder::on(&root)
                .caption(caption, ("sans-serif", 16))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(84)
                // Integer ranges are inclusive here: 0..n − 1 gives n segments.
                .build_cartesian_2d(
                    (0..cols - 1).into_segmented(),
                    (0..rows - 1).into_segmented(),
                )
                .map_err(|e| error(e.to_string()))?;
            // Row r is drawn at y = rows − 1 − r, so the first row is on top.
            let x_name = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(c) if *c < cols => name(&self.col_names, *c),
                _ => String::new(),
            };
            let y_name = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(y) if *y < rows => name(&self.row_names, rows - 1 - y),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc(&self.col_label)
                .y_desc(&self.row_label)
                .x_labels(cols.min(24) + 1)
                .y_labels(rows.min(24) + 1)
                .x_label_formatter(&x_name)
                .y_label_formatter(&y_name)
                .draw()
                .map_err(|e| error(e.to_string()))?;
            let cells: Vec<(usize, usize, f64)> = self
                .values
                .iter()
                .enumerate()
                .flat_map(|(r, row)| row.iter().enumerate().map(move |(c, &v)| (r, c, v)))
                .collect();
            let shade = |v: f64| if v.is_finite() { (v - lo) / range } else { 0.0 };
            chart
                .draw_series(cells.iter().map(|&(r, c, v)| {
                    let t = shade(v);
                    let tone = |full: f64| (255.0 - t * (255.0 - full)).round() as u8;
                    let color = RGBColor(tone(8.0), tone(48.0), tone(107.0));
                    let y = rows - 1 - r;
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(c), SegmentValue::Exact(y + 1)),
                            (SegmentValue::Exact(c + 1), SegmentValue::Exact(y)),
                        ],
                        color.filled(),
                    )
                }))
                .map_err(|e| error(e.to_string()))?;
            if annotate {
                chart
                    .draw_series(cells.iter().map(|&(r, c, v)| {
                        let ink = if shade(v) > 0.55 { WHITE } else { BLACK };
                        let style = ("sans-serif", 11).into_font().color(&ink);
                        let corner = (SegmentValue::Exact(c), SegmentValue::Exact(rows - r));
                        EmptyElement::at(corner) + Text::new(short(v), (4, 4), style)
                    }))
                    .map_err(|e| error(e.to_string()))?;
            }
            root.present().map_err(|e| error(e.to_string()))?;
        }
        Ok(svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_log_log_lines_and_skips_what_it_cannot_show() {
        let svg = LineChart::new("g vs d_k", "d_k", "‖g‖")
            .log_x()
            .log_y()
            .line("none", vec![(8.0, 1.0), (64.0, 1e-3), (1024.0, 0.0)])
            .line("sqrt-dk", vec![(8.0, 0.5), (64.0, 0.4), (1024.0, 0.45)])
            .to_svg()
            .unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("sqrt-dk"), "{svg}");
    }

    #[test]
    fn error_bars_are_drawn_and_widen_the_range() {
        let points = vec![(1.0, 0.5), (2.0, 0.6), (3.0, 0.7)];
        let chart = |errors: Vec<(f64, f64)>| {
            LineChart::new("acc", "n", "a")
                .line_with_errors("x", points.clone(), errors)
                .to_svg()
                .unwrap()
        };
        // Bars inside the points' span leave the axes alone: each adds a stroke and two caps.
        let plain = chart(Vec::new());
        let inside = chart(vec![(0.5, 0.55), (0.55, 0.65), (0.65, 0.7)]);
        let lines = |svg: &str| svg.matches("<line").count();
        assert_eq!(lines(&inside), lines(&plain) + 9);
        // A bar reaching 0.1 widens the axis down to it.
        let wide = chart(vec![(0.4, 0.6), (0.1, 0.9), (0.65, 0.75)]);
        let tick = |svg: &str, label: &str| svg.contains(&format!(">\n{label}\n</text>"));
        assert!(tick(&wide, "0.2"), "{wide}");
        assert!(!tick(&plain, "0.2"));
    }

    #[test]
    fn an_empty_chart_is_an_error() {
        let err = LineChart::new("t", "x", "y")
            .line("a", vec![(1.0, f64::NAN)])
            .to_svg();
        assert!(err.unwrap_err().to_string().contains("no finite points"));
    }

    #[test]
    fn heatmap() {
        let map = Heatmap::new(
            "weights",
            "query",
            "key",
            vec![vec![1.0, 0.0], vec![0.5, 0.5]],
        )
        .names(
            vec!["the".into(), "cat".into()],
            vec!["the".into(), "cat".into()],
        );
        let svg = map.to_svg().unwrap();
        assert!(
            svg.contains("<rect") && svg.contains("\ncat\n") && svg.contains("\n0.5\n"),
            "{svg}"
        );
        let ragged = Heatmap {
            values: vec![vec![1.0], vec![]],
            ..map.clone()
        };
        assert!(ragged.to_svg().is_err());
        let misnamed = map.names(vec!["one".into()], vec![]);
        assert!(misnamed.to_svg().is_err());
    }

    #[test]
    fn tick_labels() {
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(1024.0), "1024");
        assert_eq!(short(3.4e-7), "3.4e-7");
    }
}
