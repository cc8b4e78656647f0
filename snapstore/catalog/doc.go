// Package catalog holds the store's pure decisions: what a backup object's name says
// (Snapshot, Kind, FullName, DeltaName, ParseName) and what is decided from the names alone,
// before any I/O: the restore plan (PlanRestore) and the restorable window
// (RestorableWindow), the retention policies (Policy) and the garbage collection plan
// (PlanGC) with the restore locks it honours (RestoreLock), the revision bump of a new
// history (RevisionBump), the chain check (CheckChain), the selection of copies
// (SelectCopies) and the compaction of the backup chain (PlanCompaction, CompactBound).
//
// Everything here is a function of plain values, table-tested; nothing reads or writes a
// store, a file or the network (TestNoIO keeps it so). Package snapstore does the I/O: it
// lists, reads and writes the objects and records, and applies the plans made here.
package catalog
