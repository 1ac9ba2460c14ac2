// Package projector will consume events from NATS JetStream and build read models: per-stream
// order, batches per transaction, a version guard and checkpoint in the same transaction as the
// read-model write, and a sequenced dead-letter store (DESIGN sections 1, 5 and 6). It arrives with
// the read-side issue.
package projector
