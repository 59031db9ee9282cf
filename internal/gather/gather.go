// Package gather turns a stream of items into batches: whatever arrives within a short window
// of the first item goes out together, so that many outcomes cost one statement rather than
// one each, while a lone item waits no longer than the window.
package gather

import "time"

// Run reads in until it is closed and calls flush with batches of at most max items: each
// batch is the first item and those that arrive within window of it. flush runs on Run's
// goroutine, so items sent meanwhile wait in the channel and join the next batch.
func Run[T any](in <-chan T, window time.Duration, max int, flush func([]T)) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for first := range in {
		batch := []T{first}
		timer.Reset(window)
	more:
		for len(batch) < max {
			select {
			case item, ok := <-in:
				if !ok {
					break more
				}
				batch = append(batch, item)
			case <-timer.C:
				break more
			}
		}
		timer.Stop()
		flush(batch)
	}
}
