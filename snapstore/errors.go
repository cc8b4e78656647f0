package snapstore

import "errors"

// ErrCorrupt is wrapped by every error that reports a stored object whose
// content does not match its trailer: a missing or short trailer, a wrong
// magic, version, length or SHA-256, a zstd decode error or a failed age
// authentication. The error message names the object's key.
var ErrCorrupt = errors.New("corrupt backup object")

// ErrNotFound is wrapped by the error Store.Open returns when no object
// exists under the requested key.
var ErrNotFound = errors.New("backup object not found")

// ErrNoIdentity is wrapped by the error Store.Open returns for an encrypted
// (.age) object when no identity is configured or none of the configured
// identities can decrypt it.
var ErrNoIdentity = errors.New("no age identity can decrypt the object")

// ErrNoStore is wrapped by the errors that report a store that does not
// exist: with Options.MustExist, a file store whose directory is missing;
// from Check, a bucket (or container) the provider says does not exist.
// It tells "no such store" (a mistyped URL) from an empty store.
var ErrNoStore = errors.New("no such store")
