package main

// Pure parts of the method: bracket rejection, percentiles, medians with their range, and
// each path's figure put against direct (or another path) within the same trial.

import (
	"math"
	"slices"
)

// trial is one trial of one workload: the direct runs before and after, and each path's
// figures (nil with an entry in errs when that path failed the run).
type trial struct {
	n             int
	before, after map[string]float64
	paths         map[string]map[string]float64
	errs          map[string]string
}

// How a path's figure is shown.
const (
	asIs          = iota // the figure itself
	ratioToDirect        // ÷ the mean of the two direct runs of the trial
	minusDirect          // − the mean of the two direct runs of the trial (added latency)
	ratioToPath          // ÷ the same figure of metric.ref in the same trial
)

type metric struct {
	key, label string
	vs         int
	ref        string // the path of ratioToPath
	target     *target
}

// target is a goal from the issue: met when the median is at most (or at least) limit.
type target struct {
	text    string
	limit   float64
	atLeast bool
}

func (t target) met(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	if t.atLeast {
		return v >= t.limit
	}
	return v <= t.limit
}

// spread is how far apart the two direct runs are on key, relative to the larger.
func spread(t trial, key string) float64 {
	a, b := t.before[key], t.after[key]
	if max(a, b) == 0 {
		return 0
	}
	return math.Abs(a-b) / max(math.Abs(a), math.Abs(b))
}

// accept splits trials by the bracket rule: the two direct runs within maxSpread on key.
func accept(ts []trial, key string, maxSpread float64) (ok, dropped []trial) {
	for _, t := range ts {
		if spread(t, key) > maxSpread {
			dropped = append(dropped, t)
		} else {
			ok = append(ok, t)
		}
	}
	return ok, dropped
}

// directMean is the mean of the two direct runs of t on key.
func directMean(t trial, key string) float64 { return (t.before[key] + t.after[key]) / 2 }

// column is path's figure for m in every trial where it has one, as m.vs says.
func column(ts []trial, path string, m metric) []float64 {
	var xs []float64
	for _, t := range ts {
		var v float64
		if path == "direct" {
			_, a := t.before[m.key]
			_, b := t.after[m.key]
			if !a || !b {
				continue // a figure only proxies have (RSS, proxy CPU)
			}
			v = directMean(t, m.key)
		} else {
			fig, ok := t.paths[path]
			if !ok || fig == nil {
				continue
			}
			if v, ok = fig[m.key]; !ok {
				continue
			}
		}
		switch m.vs {
		case ratioToDirect:
			d := directMean(t, m.key)
			if d == 0 {
				continue
			}
			v /= d
		case minusDirect:
			v -= directMean(t, m.key)
		case ratioToPath:
			ref, ok := t.paths[m.ref][m.key]
			if !ok || ref == 0 {
				continue
			}
			v /= ref
		}
		xs = append(xs, v)
	}
	return xs
}

// stats is the median of xs and its range (NaN for none).
func stats(xs []float64) (med, lo, hi float64) {
	if len(xs) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// percentile is the p-th percentile of xs by the nearest-rank method (NaN for none).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}
