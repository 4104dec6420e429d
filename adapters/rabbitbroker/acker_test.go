package rabbitbroker

import (
	"fmt"
	"slices"
	"testing"
)

// wire records the ack frames an acker sends.
type wire struct{ frames []string }

func (w *wire) send(tag uint64, multiple bool) error {
	if multiple {
		w.frames = append(w.frames, fmt.Sprintf("ack<=%d", tag))
	} else {
		w.frames = append(w.frames, fmt.Sprintf("ack %d", tag))
	}
	return nil
}

func (w *wire) take() []string {
	f := w.frames
	w.frames = nil
	return f
}

func TestAckerGroupsOnlySettledRuns(t *testing.T) {
	w := &wire{}
	a := makeAcker(w.send, 2)
	for tag := uint64(1); tag <= 7; tag++ {
		a.delivered(tag)
	}
	steps := []struct {
		do    func()
		force bool
		want  []string
	}{
		{func() { a.ack(1); a.ack(2); a.ack(3) }, false, []string{"ack<=3"}},
		// 4 still runs: 5 waits behind it, under the limit of 2.
		{func() { a.ack(5) }, false, nil},
		// The delay passed: 5 goes out alone, never inside a multiple ack.
		{func() {}, true, []string{"ack 5"}},
		// 4 done: the run 4..5 ends at 4, the highest not yet sent.
		{func() { a.ack(4) }, false, []string{"ack<=4"}},
		// 6 waits out a retry delay at the head: 7 is not held back.
		{func() { a.hold(6); a.ack(7) }, false, []string{"ack 7"}},
		// 6 was rejected on the wire: nothing is left to ack.
		{func() { a.settled(6) }, false, nil},
	}
	for i, s := range steps {
		s.do()
		a.flush(s.force)
		if got := w.take(); !slices.Equal(got, s.want) {
			t.Fatalf("step %d: frames %v, want %v", i, got, s.want)
		}
	}
	if len(a.states) != 0 {
		t.Errorf("%d deliveries still tracked after all were settled", len(a.states))
	}
}

func TestAckerSendsWhenTooManyWait(t *testing.T) {
	w := &wire{}
	a := makeAcker(w.send, 2)
	for tag := uint64(1); tag <= 4; tag++ {
		a.delivered(tag)
	}
	a.ack(2)
	a.ack(3) // two wait behind 1: the limit
	a.flush(false)
	if got := w.take(); !slices.Equal(got, []string{"ack 2", "ack 3"}) {
		t.Fatalf("frames %v, want the two acks one by one", got)
	}
}

func TestAckerCloseFlushes(t *testing.T) {
	w := &wire{}
	a := makeAcker(w.send, 100)
	go a.loop()
	a.delivered(1)
	a.delivered(2)
	a.ack(2)
	a.close()
	if got := w.take(); !slices.Equal(got, []string{"ack 2"}) {
		t.Fatalf("frames after close %v, want the waiting ack sent", got)
	}
}
