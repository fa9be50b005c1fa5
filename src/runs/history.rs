//! Bounded chart history: a series that keeps at most a fixed number of points however long
//! a run lasts, by halving its resolution when full.
//!
//! Every point arrives in order of x. While there is room each is kept; when the budget is
//! reached every second point is dropped and from then on only every second (then fourth,
//! ...) arriving point is kept. The first point, the latest point and the extremes of the
//! whole series are tracked separately, so the numbers beside a chart stay exact even when
//! the curve is thinned.

/// Points kept per series: enough for a 160-column braille chart (320 dots across).
pub const DEFAULT_BUDGET: usize = 512;

#[derive(Debug, Clone, PartialEq)]
pub struct History {
    budget: usize,
    /// Keep one arriving point in `stride`.
    stride: usize,
    /// Points that arrived since the last kept one.
    skipped: usize,
    points: Vec<(f64, f64)>,
    last: Option<(f64, f64)>,
    min: Option<f64>,
    max: Option<f64>,
}

impl Default for History {
    fn default() -> Self {
        History::with_budget(DEFAULT_BUDGET)
    }
}

impl History {
    /// A history that keeps at most `budget` points (at least 2).
    pub fn with_budget(budget: usize) -> History {
        History {
            budget: budget.max(2),
            stride: 1,
            skipped: 0,
            points: Vec::new(),
            last: None,
            min: None,
            max: None,
        }
    }

    /// Adds a point; non-finite values are ignored (a NaN loss must not blank the chart).
    pub fn push(&mut self, x: f64, y: f64) {
        if !x.is_finite() || !y.is_finite() {
            return;
        }
        self.last = Some((x, y));
        self.min = Some(self.min.map_or(y, |m| m.min(y)));
        self.max = Some(self.max.map_or(y, |m| m.max(y)));
        self.skipped += 1;
        if self.skipped < self.stride {
            return;
        }
        self.skipped = 0;
        if self.points.len() == self.budget {
            let mut index = 0;
            self.points.retain(|_| {
                index += 1;
                index % 2 == 1
            });
            self.stride *= 2;
        }
        self.points.push((x, y));
    }

    /// The kept points, plus the latest point when thinning skipped it, so the line always
    /// reaches the present.
    pub fn points(&self) -> Vec<(f64, f64)> {
        let mut points = self.points.clone();
        if let Some(last) = self.last
            && points.last() != Some(&last)
        {
            points.push(last);
        }
        points
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// Points currently kept (at most the budget).
    pub fn kept(&self) -> usize {
        self.points.len()
    }

    pub fn last(&self) -> Option<f64> {
        self.last.map(|(_, y)| y)
    }

    pub fn min(&self) -> Option<f64> {
        self.min
    }

    pub fn max(&self) -> Option<f64> {
        self.max
    }

    /// The x range covered, first to latest.
    pub fn x_range(&self) -> Option<(f64, f64)> {
        Some((self.points.first()?.0, self.last?.0))
    }

    /// The whole history in `n` equal spans of x, each the mean of its points (a span with
    /// none repeats the one before): the run's trend from its start, for sparklines.
    pub fn resampled(&self, n: usize) -> Vec<f64> {
        let points = self.points();
        let (Some(&(first, _)), Some(&(last, _))) = (points.first(), points.last()) else {
            return Vec::new();
        };
        if n == 0 {
            return Vec::new();
        }
        let span = ((last - first) / n as f64).max(f64::MIN_POSITIVE);
        let mut sums = vec![(0.0, 0usize); n];
        for &(x, y) in &points {
            let bucket = (((x - first) / span) as usize).min(n - 1);
            sums[bucket].0 += y;
            sums[bucket].1 += 1;
        }
        let mut values = Vec::with_capacity(n);
        let mut previous = points[0].1;
        for (sum, count) in sums {
            if count > 0 {
                previous = sum / count as f64;
            }
            values.push(previous);
        }
        values
    }

    /// The newest `n` kept values, oldest first (for sparklines).
    pub fn tail(&self, n: usize) -> Vec<f64> {
        let points = self.points();
        points[points.len().saturating_sub(n)..]
            .iter()
            .map(|&(_, y)| y)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_history_halves_and_keeps_its_ends_and_extremes() {
        let mut history = History::with_budget(8);
        for i in 0..1000 {
            history.push(f64::from(i), if i == 333 { -5.0 } else { f64::from(i % 7) });
        }
        assert!(history.kept() <= 8, "kept {}", history.kept());
        assert!(history.kept() >= 4, "kept {}", history.kept());
        let points = history.points();
        assert_eq!(points.first().map(|p| p.0), Some(0.0));
        assert_eq!(points.last().map(|p| p.0), Some(999.0));
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "x stays ordered");
        assert_eq!(history.min(), Some(-5.0));
        assert_eq!(history.max(), Some(6.0));
        assert_eq!(history.last(), Some(f64::from(999 % 7)));
    }

    #[test]
    fn kept_points_are_evenly_spaced_after_halving() {
        let mut history = History::with_budget(4);
        for i in 0..16 {
            history.push(f64::from(i), 0.0);
        }
        let xs: Vec<f64> = history.points.iter().map(|p| p.0).collect();
        assert_eq!(xs, [0.0, 4.0, 8.0, 12.0]);
        assert_eq!(history.points().last().map(|p| p.0), Some(15.0));
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut history = History::default();
        history.push(1.0, f64::NAN);
        history.push(2.0, f64::INFINITY);
        assert!(history.is_empty());
        history.push(3.0, 0.5);
        assert_eq!((history.last(), history.kept()), (Some(0.5), 1));
    }

    /// A steadily falling loss reads as falling from its start, whatever its length.
    #[test]
    fn resampling_keeps_the_whole_trend() {
        let mut history = History::with_budget(256);
        for step in 0..200 {
            history.push(f64::from(step) / 10.0, 2.05 - 1.43 * f64::from(step) / 199.0);
        }
        let values = history.resampled(27);
        assert_eq!(values.len(), 27);
        assert!(values.windows(2).all(|w| w[1] <= w[0]), "{values:?}");
        assert!(values[0] > 2.0 && values[26] < 0.7, "{values:?}");
        // Fewer points than spans: the gaps repeat the value before.
        let mut short = History::with_budget(8);
        short.push(0.0, 1.0);
        short.push(1.0, 0.5);
        assert_eq!(short.resampled(4), [1.0, 1.0, 1.0, 0.5]);
        assert!(History::with_budget(8).resampled(4).is_empty());
    }
}
