package catalog

import "time"

// Damage is the record of an object found damaged.
type Damage struct {
	// Version is the format's version (1).
	Version int `json:"version"`
	// Key is the damaged object, Size its size when it was found damaged: a record
	// applies only while the object in the store has that size (an object replaced from a
	// copy is no longer taken for damaged).
	Key  string `json:"key"`
	Size int64  `json:"size"`
	// Found is when, By what found it (restore), Reason the verification error.
	Found  time.Time `json:"found"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
}

// WithoutDamaged returns list without the objects in damaged.
func WithoutDamaged(list []Snapshot, damaged map[string]Damage) []Snapshot {
	var out []Snapshot
	for _, s := range list {
		if _, bad := damaged[s.Key]; !bad {
			out = append(out, s)
		}
	}
	return out
}
