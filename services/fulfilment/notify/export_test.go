package notify

// NotifyGap is how long after a NOTIFY an Enqueue of this process leaves its own out.
const NotifyGap = notifyGap
