//! Latency histogram (log-linear buckets, < 1.6 % relative error) and small statistics helpers.

/// Sub-buckets per power of two: 2^SUB_BITS. 64 gives a worst-case relative error of 1/64.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values 0..SUB are exact; then one group of SUB buckets per power of two up to 2^63.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// A fixed-size histogram of u64 values (nanoseconds here). Recording never allocates.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("p50", &self.percentile(0.5))
            .field("p99", &self.percentile(0.99))
            .finish()
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = (v >> shift) & (SUB - 1);
    ((shift + 1) as usize) * SUB as usize + sub as usize
}

/// The middle of bucket `i` (its lower bound for the exact buckets).
fn value_of(i: usize) -> u64 {
    let group = i / SUB as usize;
    let sub = (i % SUB as usize) as u64;
    if group == 0 {
        return sub;
    }
    let shift = (group - 1) as u32;
    let lower = (SUB + sub) << shift;
    let width = 1u64 << shift;
    lower + width / 2
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    /// The value at quantile `q` (0..=1): the smallest recorded value with at least `q` of the samples at or
    /// below it, to the bucket's resolution (clamped to the exact min and max). `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        if rank >= self.total {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value_of(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// Median of a list of measurements (mean of the two middle ones for an even count). `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Loss in percent; 0 when nothing was sent. Duplicates (received > sent) count as no loss.
pub fn loss_percent(sent: u64, received: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    (sent.saturating_sub(received)) as f64 * 100.0 / sent as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), Some(5));
        assert_eq!(h.percentile(0.9), Some(9));
        assert_eq!(h.percentile(1.0), Some(10));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.count(), 10);
    }

    #[test]
    fn percentiles_within_bucket_error() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000); // 1 µs .. 100 ms in ns
        }
        for (q, want) in [
            (0.5, 50_000_000.0),
            (0.99, 99_000_000.0),
            (0.999, 99_900_000.0),
        ] {
            let got = h.percentile(q).expect("not empty") as f64;
            assert!(
                (got - want).abs() / want < 1.0 / 64.0,
                "q={q}: got {got}, want {want}"
            );
        }
        assert_eq!(h.max(), Some(100_000_000));
    }

    #[test]
    fn skewed_distribution_p99_sees_the_tail() {
        let mut h = Histogram::new();
        for _ in 0..980 {
            h.record(10_000);
        }
        for _ in 0..20 {
            h.record(5_000_000);
        }
        let p50 = h.percentile(0.5).expect("not empty");
        let p99 = h.percentile(0.99).expect("not empty");
        assert!((9_800..=10_200).contains(&p50), "{p50}");
        assert!((4_900_000..=5_000_000).contains(&p99), "{p99}");
    }

    #[test]
    fn merge_and_empty() {
        let mut a = Histogram::new();
        assert_eq!(a.percentile(0.5), None);
        assert_eq!(a.max(), None);
        let mut b = Histogram::new();
        b.record(7);
        b.record(u64::MAX);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.percentile(0.5), Some(7));
        assert_eq!(a.percentile(1.0), Some(u64::MAX));
    }

    #[test]
    fn bucket_index_is_monotonic_and_in_range() {
        let mut last = 0;
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            let i = index(v);
            assert!(i >= last && i < BUCKETS, "v={v}");
            let mid = value_of(i) as f64;
            assert!(
                (mid - v as f64).abs() / (v as f64) <= 1.0 / 64.0,
                "v={v} mid={mid}"
            );
            last = i;
            v = v + v / 7 + 1;
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn median_and_loss() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(loss_percent(0, 0), 0.0);
        assert_eq!(loss_percent(1000, 999), 0.1);
        assert_eq!(loss_percent(10, 12), 0.0);
    }
}
