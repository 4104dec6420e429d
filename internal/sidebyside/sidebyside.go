// Package sidebyside runs the cases of a comparison benchmark in interleaved
// rounds and reports each case's rate as a ratio of a baseline's rate in the
// same round.
//
// On a shared, noisy machine two benchmarks run one after the other can differ
// by a third for reasons that have nothing to do with the code: a ratio of
// rates measured seconds apart is mostly noise. Running every case once per
// round, alternating the order, and taking the median of the per-round ratios
// compares the cases under the same load.
package sidebyside

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// Case is one side of a comparison.
type Case struct {
	// Name labels the case in the log and in the reported metrics.
	Name string
	// Run does one round of the case's work and returns its rate in
	// messages per second.
	Run func(b *testing.B) float64
}

// Compare runs rounds rounds of every case, the first case being the
// baseline. Odd rounds run the cases in reverse order, so that no case always
// runs first. It logs every round's rates and reports, as benchmark metrics,
// the baseline's median rate ("<base>-msgs/s") and, for each other case, the
// median of its per-round ratios to the baseline ("<case>/<base>").
//
// The benchmark's own ns/op is then the wall time of all rounds: run it with
// -benchtime 1x so that the testing package does not repeat them.
func Compare(b *testing.B, rounds int, base Case, others ...Case) {
	b.Helper()
	cases := append([]Case{base}, others...)
	rates := make([][]float64, len(cases)) // by case, then round
	for r := range rounds {
		for k := range cases {
			i := k
			if r%2 == 1 {
				i = len(cases) - 1 - k
			}
			rates[i] = append(rates[i], cases[i].Run(b))
			if b.Failed() {
				return
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "msgs/s by round (ratio to %s in the round)\n", base.Name)
	for i, c := range cases {
		fmt.Fprintf(&sb, "%-12s", c.Name)
		var ratios []float64
		for r, rate := range rates[i] {
			fmt.Fprintf(&sb, " %9.0f", rate)
			if i > 0 {
				ratios = append(ratios, rate/rates[0][r])
				fmt.Fprintf(&sb, " (%.2f)", ratios[r])
			}
		}
		fmt.Fprintf(&sb, "   median %.0f msgs/s", Median(rates[i]))
		if i > 0 {
			fmt.Fprintf(&sb, ", ratio %.2f", Median(ratios))
			b.ReportMetric(Median(ratios), c.Name+"/"+base.Name)
		} else {
			b.ReportMetric(Median(rates[i]), base.Name+"-msgs/s")
		}
		sb.WriteByte('\n')
	}
	b.Log(sb.String())
}

// Median returns the median of xs, 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
