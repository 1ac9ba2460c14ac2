package esdbtest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
)

// Exception trailers the client reads (Constants.Exceptions on the server).
const (
	exceptionKey           = "exception"
	exceptionStreamDeleted = "stream-deleted"
	exceptionWrongVersion  = "wrong-expected-version"
	exceptionMaxAppendSize = "maximum-append-size-exceeded"
	exceptionMissingMeta   = "missing-required-metadata-property"
)

const (
	defaultSearchWindow = 32
	contentTypeJSON     = "application/json"
)

type streamsService struct {
	streams.UnimplementedStreamsServer
	db *db
}

// rpcError returns a status error and sets the exception trailers the client inspects.
func rpcError(ctx context.Context, code codes.Code, msg string, kv ...string) error {
	if len(kv) > 0 {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(kv...))
	}
	return status.Error(code, msg)
}

func streamDeleted(ctx context.Context, name string) error {
	return rpcError(ctx, codes.FailedPrecondition, fmt.Sprintf("Event stream '%s' is deleted.", name),
		exceptionKey, exceptionStreamDeleted, "stream-name", name)
}

// Append implements the Append call: the options, then the proposed events, then one answer.
func (s *streamsService) Append(call streams.Streams_AppendServer) error {
	ctx := call.Context()
	req, err := call.Recv()
	if err != nil {
		return err
	}
	opts := req.GetOptions()
	if opts == nil {
		return status.Error(codes.InvalidArgument, "the first append message must carry options")
	}
	name := string(opts.GetStreamIdentifier().GetStreamName())
	var expected int64
	switch rev := opts.GetExpectedStreamRevision().(type) {
	case *streams.AppendReq_Options_Revision:
		expected = int64(rev.Revision)
	case *streams.AppendReq_Options_NoStream:
		expected = expectNoStream
	case *streams.AppendReq_Options_Any:
		expected = expectAny
	case *streams.AppendReq_Options_StreamExists:
		expected = expectStreamExists
	default:
		return status.Error(codes.InvalidArgument, "missing expected stream revision")
	}

	var (
		recs []*record
		ids  []uuid.UUID
		size int
	)
	for {
		req, err := call.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		msg := req.GetProposedMessage()
		if msg == nil {
			return status.Error(codes.InvalidArgument, "expected a proposed message")
		}
		eventType, ok := msg.GetMetadata()["type"]
		if !ok {
			return rpcError(ctx, codes.InvalidArgument, "Required Metadata Property 'type' is missing",
				exceptionKey, exceptionMissingMeta)
		}
		contentType, ok := msg.GetMetadata()["content-type"]
		if !ok {
			return rpcError(ctx, codes.InvalidArgument, "Required Metadata Property 'content-type' is missing",
				exceptionKey, exceptionMissingMeta)
		}
		id, err := uuidFromProto(msg.GetId())
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		size += eventSize(eventType, msg.GetData(), msg.GetCustomMetadata())
		recs = append(recs, &record{
			id: id, eventType: eventType, contentType: contentType,
			data: msg.GetData(), metadata: msg.GetCustomMetadata(),
		})
		ids = append(ids, id)
	}
	if size > s.db.maxAppendSize {
		return rpcError(ctx, codes.InvalidArgument, fmt.Sprintf("Maximum Append Size of %d Exceeded.", s.db.maxAppendSize),
			exceptionKey, exceptionMaxAppendSize, "maximum-append-size", strconv.Itoa(s.db.maxAppendSize))
	}

	d := s.db
	d.mu.Lock()
	d.expected[name] = append(d.expected[name], expectedString(expected))
	dec, last := d.checkCommit(name, expected, ids)
	var resp *streams.AppendResp
	switch dec {
	case decisionDeleted:
		d.mu.Unlock()
		return streamDeleted(ctx, name)
	case decisionWrongExpectedVersion:
		resp = wrongExpectedVersion(expected, d.streams[name].current())
	case decisionIdempotent:
		r := d.streams[name].events[last]
		resp = appendSuccess(int64(r.revision), r.position)
	default:
		if len(recs) == 0 {
			resp = appendSuccess(d.streams[name].current(), 0)
			break
		}
		r := d.write(name, recs)
		resp = appendSuccess(int64(r.revision), r.position)
	}
	d.mu.Unlock()
	return call.SendAndClose(resp)
}

func appendSuccess(revision int64, position uint64) *streams.AppendResp {
	ok := &streams.AppendResp_Success{}
	if revision < 0 {
		ok.CurrentRevisionOption = &streams.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
	} else {
		ok.CurrentRevisionOption = &streams.AppendResp_Success_CurrentRevision{CurrentRevision: uint64(revision)}
	}
	if position == 0 {
		ok.PositionOption = &streams.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
	} else {
		ok.PositionOption = &streams.AppendResp_Success_Position{Position: &streams.AppendResp_Position{
			CommitPosition: position, PreparePosition: position,
		}}
	}
	return &streams.AppendResp{Result: &streams.AppendResp_Success_{Success: ok}}
}

func wrongExpectedVersion(expected, current int64) *streams.AppendResp {
	w := &streams.AppendResp_WrongExpectedVersion{}
	switch expected {
	case expectAny:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: &shared.Empty{}}
	case expectNoStream:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: &shared.Empty{}}
	case expectStreamExists:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: &shared.Empty{}}
	default:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: uint64(expected)}
	}
	if current < 0 {
		w.CurrentRevisionOption = &streams.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: &shared.Empty{}}
	} else {
		w.CurrentRevisionOption = &streams.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: uint64(current)}
	}
	return &streams.AppendResp{Result: &streams.AppendResp_WrongExpectedVersion_{WrongExpectedVersion: w}}
}

// Delete is soft deletion, which the stand-in does not model.
func (s *streamsService) Delete(context.Context, *streams.DeleteReq) (*streams.DeleteResp, error) {
	return nil, status.Error(codes.Unimplemented, "esdbtest: soft delete is not implemented; use Tombstone")
}

// Tombstone implements hard deletion: the stream can never be read or written again.
func (s *streamsService) Tombstone(ctx context.Context, req *streams.TombstoneReq) (*streams.TombstoneResp, error) {
	opts := req.GetOptions()
	name := string(opts.GetStreamIdentifier().GetStreamName())
	var expected int64
	switch rev := opts.GetExpectedStreamRevision().(type) {
	case *streams.TombstoneReq_Options_Revision:
		expected = int64(rev.Revision)
	case *streams.TombstoneReq_Options_NoStream:
		expected = expectNoStream
	case *streams.TombstoneReq_Options_Any:
		expected = expectAny
	case *streams.TombstoneReq_Options_StreamExists:
		expected = expectStreamExists
	default:
		return nil, status.Error(codes.InvalidArgument, "missing expected stream revision")
	}
	d := s.db
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.streams[name]
	if st != nil && st.tombstoned {
		return nil, streamDeleted(ctx, name)
	}
	cur := st.current()
	ok := expected == expectAny || expected == cur || (expected == expectStreamExists && cur >= 0)
	if !ok {
		return nil, rpcError(ctx, codes.FailedPrecondition,
			fmt.Sprintf("Delete failed due to WrongExpectedVersion. Stream: %s, Expected version: %d, Actual version: %d", name, expected, cur),
			exceptionKey, exceptionWrongVersion, "stream-name", name,
			"expected-version", strconv.FormatInt(expected, 10), "actual-version", strconv.FormatInt(cur, 10))
	}
	r := d.tombstone(name)
	return &streams.TombstoneResp{PositionOption: &streams.TombstoneResp_Position_{Position: &streams.TombstoneResp_Position{
		CommitPosition: r.position, PreparePosition: r.position,
	}}}, nil
}

// Read implements stream reads, $all reads and $all subscriptions.
func (s *streamsService) Read(req *streams.ReadReq, call streams.Streams_ReadServer) error {
	opts := req.GetOptions()
	if opts == nil {
		return status.Error(codes.InvalidArgument, "missing read options")
	}
	if opts.GetUuidOption() == nil {
		return status.Error(codes.InvalidArgument, "'uuidOption' is a required argument")
	}
	asString := opts.GetUuidOption().GetString_() != nil
	backwards := opts.GetReadDirection() == streams.ReadReq_Options_Backwards
	f, err := readFilter(opts.GetFilter())
	if err != nil {
		return err
	}
	_, subscribe := opts.GetCountOption().(*streams.ReadReq_Options_Subscription)
	switch {
	case opts.GetStream() != nil && subscribe:
		return status.Error(codes.Unimplemented, "esdbtest: stream subscriptions are not implemented; subscribe to $all")
	case opts.GetStream() != nil:
		if f != nil {
			return status.Error(codes.InvalidArgument, "filters apply to $all only")
		}
		return s.readStream(call, opts.GetStream(), backwards, opts.GetCount(), asString)
	case opts.GetAll() != nil && subscribe:
		if backwards {
			return status.Error(codes.InvalidArgument, "subscriptions read forwards")
		}
		return s.subscribeAll(call, opts.GetAll(), f, asString)
	case opts.GetAll() != nil:
		return s.readAll(call, opts.GetAll(), backwards, opts.GetCount(), f, asString)
	default:
		return status.Error(codes.InvalidArgument, "read needs a stream or $all")
	}
}

func readFilter(fo *streams.ReadReq_Options_FilterOptions) (*filter, error) {
	if fo == nil {
		return nil, nil
	}
	f := &filter{window: defaultSearchWindow}
	var expr *streams.ReadReq_Options_FilterOptions_Expression
	switch x := fo.GetFilter().(type) {
	case *streams.ReadReq_Options_FilterOptions_StreamIdentifier:
		f.onStream, expr = true, x.StreamIdentifier
	case *streams.ReadReq_Options_FilterOptions_EventType:
		expr = x.EventType
	default:
		return nil, status.Error(codes.InvalidArgument, "filter needs a stream identifier or event type expression")
	}
	if expr.GetRegex() != "" {
		re, err := regexp.Compile(expr.GetRegex())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "filter regex: %v", err)
		}
		f.re = re
	} else {
		f.prefixes = expr.GetPrefix()
	}
	if m, ok := fo.GetWindow().(*streams.ReadReq_Options_FilterOptions_Max); ok && m.Max > 0 {
		f.window = int(m.Max)
	}
	f.interval = max(int(fo.GetCheckpointIntervalMultiplier()), 1) * f.window
	return f, nil
}

func (s *streamsService) readStream(call streams.Streams_ReadServer, so *streams.ReadReq_Options_StreamOptions, backwards bool, count uint64, asString bool) error {
	name := string(so.GetStreamIdentifier().GetStreamName())
	d := s.db
	d.mu.Lock()
	st := d.streams[name]
	var (
		evs       []*record
		tombstone bool
	)
	if st != nil {
		tombstone = st.tombstoned
		evs = st.events // records are immutable and the slice only grows: safe to use unlocked
	}
	d.mu.Unlock()
	if tombstone {
		return streamDeleted(call.Context(), name)
	}
	if len(evs) == 0 {
		return call.Send(&streams.ReadResp{Content: &streams.ReadResp_StreamNotFound_{StreamNotFound: &streams.ReadResp_StreamNotFound{
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(name)},
		}}})
	}
	last := uint64(len(evs) - 1)
	var out []*record
	if backwards {
		from := last
		switch x := so.GetRevisionOption().(type) {
		case *streams.ReadReq_Options_StreamOptions_Revision:
			from = min(x.Revision, last)
		case *streams.ReadReq_Options_StreamOptions_Start:
			from = 0
		}
		for i := int64(from); i >= 0 && uint64(len(out)) < count; i-- {
			out = append(out, evs[i])
		}
	} else {
		var from uint64
		switch x := so.GetRevisionOption().(type) {
		case *streams.ReadReq_Options_StreamOptions_Revision:
			from = x.Revision
		case *streams.ReadReq_Options_StreamOptions_End:
			from = last + 1
		}
		for i := from; i <= last && uint64(len(out)) < count; i++ {
			out = append(out, evs[i])
		}
	}
	for _, r := range out {
		if err := call.Send(eventResp(r, asString)); err != nil {
			return err
		}
	}
	return nil
}

func (s *streamsService) readAll(call streams.Streams_ReadServer, ao *streams.ReadReq_Options_AllOptions, backwards bool, count uint64, f *filter, asString bool) error {
	d := s.db
	d.mu.Lock()
	log := d.log
	var start int
	switch x := ao.GetAllOption().(type) {
	case *streams.ReadReq_Options_AllOptions_Position:
		start = d.searchAll(x.Position.GetCommitPosition())
	case *streams.ReadReq_Options_AllOptions_End:
		start = len(log)
	case *streams.ReadReq_Options_AllOptions_Start:
		start = 0
	}
	d.mu.Unlock()
	var out []*record
	if backwards {
		for i := start - 1; i >= 0 && uint64(len(out)) < count; i-- {
			if f.allows(log[i]) {
				out = append(out, log[i])
			}
		}
	} else {
		for i := start; i < len(log) && uint64(len(out)) < count; i++ {
			if f.allows(log[i]) {
				out = append(out, log[i])
			}
		}
	}
	for _, r := range out {
		if err := call.Send(eventResp(r, asString)); err != nil {
			return err
		}
	}
	return nil
}

// subscribeAll serves a catch-up subscription to $all until the client leaves, the server stops or
// DropSubscriptions drops it.
func (s *streamsService) subscribeAll(call streams.Streams_ReadServer, ao *streams.ReadReq_Options_AllOptions, f *filter, asString bool) error {
	d := s.db
	ctx := call.Context()
	drop := d.subscribe()
	defer d.unsubscribe(drop)

	d.mu.Lock()
	var next int
	switch x := ao.GetAllOption().(type) {
	case *streams.ReadReq_Options_AllOptions_Position:
		// The server reads one event from the position and starts after it: the position names the
		// last event the subscriber has seen.
		next = min(d.searchAll(x.Position.GetCommitPosition())+1, len(d.log))
	case *streams.ReadReq_Options_AllOptions_End:
		next = len(d.log)
	}
	d.mu.Unlock()

	if err := call.Send(&streams.ReadResp{Content: &streams.ReadResp_Confirmation{Confirmation: &streams.ReadResp_SubscriptionConfirmation{
		SubscriptionId: uuid.NewString(),
	}}}); err != nil {
		return err
	}
	considered := 0
	caughtUp := false
	for {
		batch, changed := d.since(next)
		for _, r := range batch {
			select {
			case <-drop:
				return status.Error(codes.Unavailable, "esdbtest: subscription dropped")
			default:
			}
			next++
			considered++
			if f.allows(r) {
				if err := call.Send(eventResp(r, asString)); err != nil {
					return err
				}
			}
			if f != nil && considered%f.interval == 0 {
				if err := call.Send(&streams.ReadResp{Content: &streams.ReadResp_Checkpoint_{Checkpoint: &streams.ReadResp_Checkpoint{
					CommitPosition: r.position, PreparePosition: r.position,
				}}}); err != nil {
					return err
				}
			}
		}
		if !caughtUp {
			caughtUp = true
			if err := call.Send(&streams.ReadResp{Content: &streams.ReadResp_CaughtUp_{CaughtUp: &streams.ReadResp_CaughtUp{}}}); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-drop:
			return status.Error(codes.Unavailable, "esdbtest: subscription dropped")
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

func eventResp(r *record, asString bool) *streams.ReadResp {
	id := &shared.UUID{}
	if asString {
		id.Value = &shared.UUID_String_{String_: r.id.String()}
	} else {
		id.Value = &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
			MostSignificantBits:  int64(binary.BigEndian.Uint64(r.id[:8])),
			LeastSignificantBits: int64(binary.BigEndian.Uint64(r.id[8:])),
		}}
	}
	return &streams.ReadResp{Content: &streams.ReadResp_Event{Event: &streams.ReadResp_ReadEvent{
		Event: &streams.ReadResp_ReadEvent_RecordedEvent{
			Id:               id,
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(r.stream)},
			StreamRevision:   r.revision,
			PreparePosition:  r.position,
			CommitPosition:   r.position,
			Metadata: map[string]string{
				"type":         r.eventType,
				"content-type": r.contentType,
				// .NET ticks (100 ns) since the Unix epoch; the client cannot read an event without it.
				"created": strconv.FormatInt(r.created.UnixNano()/100, 10),
			},
			CustomMetadata: r.metadata,
			Data:           r.data,
		},
		Position: &streams.ReadResp_ReadEvent_CommitPosition{CommitPosition: r.position},
	}}}
}

func uuidFromProto(id *shared.UUID) (uuid.UUID, error) {
	switch v := id.GetValue().(type) {
	case *shared.UUID_Structured_:
		var u uuid.UUID
		binary.BigEndian.PutUint64(u[:8], uint64(v.Structured.GetMostSignificantBits()))
		binary.BigEndian.PutUint64(u[8:], uint64(v.Structured.GetLeastSignificantBits()))
		return u, nil
	case *shared.UUID_String_:
		return uuid.Parse(v.String_)
	default:
		return uuid.Nil, errors.New("event id missing")
	}
}

type featuresService struct {
	serverfeatures.UnimplementedServerFeaturesServer
}

// GetSupportedMethods tells the client which server it talks to; it asks on every connection.
func (featuresService) GetSupportedMethods(context.Context, *shared.Empty) (*serverfeatures.SupportedMethods, error) {
	const svc = "event_store.client.streams.streams"
	return &serverfeatures.SupportedMethods{
		EventStoreServerVersion: "24.10.0",
		Methods: []*serverfeatures.SupportedMethod{
			{ServiceName: svc, MethodName: "read"},
			{ServiceName: svc, MethodName: "append"},
			{ServiceName: svc, MethodName: "tombstone"},
		},
	}, nil
}
