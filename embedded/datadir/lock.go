package datadir

// InUse reports whether a process holds the lock of dataDir's db (a running etcd holds it
// exclusively). A data dir without a db is not in use. Where the lock cannot be tested, the db
// is reported as not in use.
func InUse(dataDir string) (bool, error) {
	return dbInUse(newMemberLayout(dataDir, "").db)
}
