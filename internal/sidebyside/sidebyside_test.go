package sidebyside

import (
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// Compare alternates the order of the cases and divides each rate by the
// baseline's rate of the same round: here the machine gets faster every round
// and the library is always 0.9 of raw in its round, so the median ratio is
// exactly 0.9, while a ratio of overall medians would not be.
func TestCompareInterleavesAndDividesWithinRounds(t *testing.T) {
	var order []string
	res := testing.Benchmark(func(b *testing.B) {
		order = nil
		raws, libs := 0, 0
		base := Case{"raw", func(*testing.B) float64 {
			order = append(order, "raw")
			raws++
			return float64(100 * raws * raws)
		}}
		lib := Case{"lib", func(*testing.B) float64 {
			order = append(order, "lib")
			libs++
			return float64(90 * libs * libs)
		}}
		Compare(b, 3, base, lib)
	})
	if got := strings.Join(order, ","); got != "raw,lib,lib,raw,raw,lib" {
		t.Fatalf("order = %s", got)
	}
	if r := res.Extra["lib/raw"]; r < 0.8999 || r > 0.9001 {
		t.Fatalf("lib/raw = %v, want 0.9 (extras %v)", r, res.Extra)
	}
	if got := res.Extra["raw-msgs/s"]; got != 400 {
		t.Fatalf("raw-msgs/s = %v, want the median 400", got)
	}
}
