package stack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// A start waits the whole -start-wait: a dependency that answers 2 s into a 3 s wait is taken.
// It used to give up once the next pause would pass the deadline, up to 5 s early.
func TestAStartTakesWhatAnswersBeforeItsWaitEnds(t *testing.T) {
	s := &system{cfg: Config{StartWait: 3 * time.Second}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	start := time.Now()
	answersAt := 2 * time.Second
	tries := 0
	err := s.untilAnswered(context.Background(), "a dependency", func() (bool, error) {
		tries++
		if time.Since(start) < answersAt {
			return true, errors.New("no servers available for connection")
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("start gave up after %v (%d tries) with a 3 s start wait, though the dependency answers at %v: %v",
			time.Since(start).Round(10*time.Millisecond), tries, answersAt, err)
	}
}

// Nor does it wait past the start wait for one that never answers.
func TestAStartGivesUpWhenItsWaitEnds(t *testing.T) {
	s := &system{cfg: Config{StartWait: time.Second}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	start := time.Now()
	err := s.untilAnswered(context.Background(), "a dependency", func() (bool, error) {
		return true, errors.New("no servers available for connection")
	})
	if err == nil {
		t.Fatal("a dependency that never answers was taken")
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("gave up after %v of a 1 s start wait", waited)
	}
}
