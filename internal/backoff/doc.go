// Package backoff is how etcdbr waits between retries: each wait doubles from a minimum up
// to a maximum, optionally drawn at random below it (full jitter), and starts again from the
// minimum after a success (Reset). Sleep waits one such wait, or until its context ends.
//
// It is the one place for the retry loops of the store's reads, the delta taker, the
// full-snapshot runner, the claim of the store and the restore's wait before listing again.
package backoff
