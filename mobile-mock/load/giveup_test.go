package load

import (
	"sync"
	"testing"
	"time"
)

// A shopper whose order failed before its checkout gives up (count mode) only once orders have
// kept failing, no checkout made, for GiveUpAfter. Other shoppers reset the start of that
// stretch to 0 whenever they make a checkout; the check read it twice (set it if 0, then read
// it again), and a reset in between made the second read 0: a stretch begun in 1970, given up
// at once. Here checkouts keep resetting it while shoppers fail, all within a second: nobody
// may give up after an hour.
func TestGivingUpIsNeverFooledByAStretchResetMeanwhile(t *testing.T) {
	r := &run{cfg: Config{GiveUpAfter: time.Hour}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // checkouts being made
		for {
			select {
			case <-stop:
				return
			default:
				r.failingSince.Store(0)
			}
		}
	})
	var gaveUp sync.Once
	for range 3 { // shoppers whose orders fail
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r.failingTooLong(time.Now().UnixNano()) {
					gaveUp.Do(func() { t.Error("gave up after an hour, a second into the run, with checkouts made all along") })
				}
			}
		})
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
}
