// Package relay will tail the event store's global log from a durable checkpoint and publish every
// event to NATS JetStream with Nats-Msg-Id set to the event id (DESIGN section 1). It is the only
// publisher: the command service never writes to NATS. It arrives with the fan-out issue; the event
// store's Subscribe, which it will use, already guarantees that no late commit is skipped.
package relay
