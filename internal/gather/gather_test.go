package gather_test

import (
	"slices"
	"testing"
	"time"

	"github.com/handoff-dev/handoff/internal/gather"
)

func TestItemsWithinTheWindowGoTogetherAndNoneIsLost(t *testing.T) {
	in := make(chan int, 100)
	for i := range 10 {
		in <- i
	}
	var batches [][]int
	done := make(chan struct{})
	go func() {
		defer close(done)
		gather.Run(in, time.Hour, 4, func(b []int) { batches = append(batches, slices.Clone(b)) })
	}()
	close(in)
	<-done
	if len(batches) != 3 || len(batches[0]) != 4 || len(batches[1]) != 4 || len(batches[2]) != 2 {
		t.Fatalf("batches %v; want sizes 4, 4, 2 (max 4, the channel closed after 10)", batches)
	}
	var all []int
	for _, b := range batches {
		all = append(all, b...)
	}
	if !slices.Equal(all, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Fatalf("items %v; want 0–9 in order", all)
	}
}

func TestALoneItemWaitsOnlyTheWindow(t *testing.T) {
	in := make(chan int)
	got := make(chan []int, 1)
	go gather.Run(in, 20*time.Millisecond, 10, func(b []int) { got <- slices.Clone(b) })
	defer close(in)
	in <- 7
	select {
	case b := <-got:
		if !slices.Equal(b, []int{7}) {
			t.Fatalf("batch %v; want [7]", b)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a lone item was not flushed after its window")
	}
}
