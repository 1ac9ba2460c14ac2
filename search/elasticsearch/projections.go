package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
	"github.com/elastic/go-elasticsearch/v8/esutil"
	"github.com/jackc/pgx/v5"

	"github.com/strata-dev/strata/events"
	"github.com/strata-dev/strata/projector"
	"github.com/strata-dev/strata/search"
)

// Products keeps the product index: each product stream folded into one document
// ([search.ApplyProduct]). It implements projector.External; get it from [Index.Products].
type Products struct{ c *conn }

// Name implements projector.Projection: [ProductsProjection].
func (*Products) Name() string { return ProductsProjection }

// AggregateTypes implements projector.Projection.
func (*Products) AggregateTypes() []string { return []string{events.ProductAggregate} }

// Backend implements projector.External.
func (*Products) Backend() string { return "elasticsearch" }

// Apply implements projector.Projection. It queues no statement: the document is written by
// [Products.Write]. It fails only for an event no product document can take (an unknown type, or a
// stream without an id), which is poison.
func (*Products) Apply(_ *pgx.Batch, e events.Envelope) error {
	probe := search.Product{ID: "probe"} // a created product, so that only the event's kind is checked
	return search.ApplyProduct(&probe, e)
}

// Write implements projector.External: it folds evs onto the current documents of their products
// and indexes each changed document once, with its stream version as external version. A version
// conflict (the index already holds that version or a newer one) is success. It fails if the
// documents cannot be read, an event cannot be folded (say, a change before the product was
// created), or Elasticsearch refuses a document; the error names the document and Elasticsearch's
// reason.
func (p *Products) Write(ctx context.Context, evs []events.Envelope) error {
	return forProjector(write(ctx, p.c, p.c.products, "product", evs, search.ApplyProduct,
		func(d *search.Product) uint64 { return d.Version },
		func(d *search.Product) { d.CreatedAt = d.CreatedAt.Truncate(time.Millisecond); d.Highlights = nil }))
}

// Orders keeps the order index, as [Products] does for products ([search.ApplyOrder]). Get it from
// [Index.Orders].
type Orders struct{ c *conn }

// Name implements projector.Projection: [OrdersProjection].
func (*Orders) Name() string { return OrdersProjection }

// AggregateTypes implements projector.Projection.
func (*Orders) AggregateTypes() []string { return []string{events.OrderAggregate} }

// Backend implements projector.External.
func (*Orders) Backend() string { return "elasticsearch" }

// Apply implements projector.Projection, as [Products.Apply] does.
func (*Orders) Apply(_ *pgx.Batch, e events.Envelope) error {
	probe := search.Order{ID: "probe"}
	return search.ApplyOrder(&probe, e)
}

// Write implements projector.External, as [Products.Write] does.
func (o *Orders) Write(ctx context.Context, evs []events.Envelope) error {
	return forProjector(write(ctx, o.c, o.c.orders, "order", evs, search.ApplyOrder,
		func(d *search.Order) uint64 { return d.Version },
		func(d *search.Order) { d.PlacedAt = d.PlacedAt.Truncate(time.Millisecond); d.Highlights = nil }))
}

// forProjector marks a cluster that is down or overloaded as [projector.ErrUnavailable], so that the
// projector waits for it instead of parking the events as poison.
func forProjector(err error) error {
	if errors.Is(err, search.ErrUnavailable) {
		return fmt.Errorf("%w: %w", projector.ErrUnavailable, err)
	}
	return err
}

// write folds evs onto the documents of their streams and indexes the changed ones. T is the
// document type; apply folds an event, version reads a document's version, prepare readies a
// document for indexing.
func write[T any](ctx context.Context, c *conn, n names, kind string, evs []events.Envelope,
	apply func(*T, events.Envelope) error, version func(*T) uint64, prepare func(*T),
) error {
	if len(evs) == 0 {
		return nil
	}
	// The batch's events per document, in order.
	var ids []string
	byID := map[string][]events.Envelope{}
	for _, e := range evs {
		_, id, ok := events.SplitStream(e.Stream)
		if !ok {
			return fmt.Errorf("%s search: stream %q has no id", kind, e.Stream)
		}
		if _, seen := byID[id]; !seen {
			ids = append(ids, id)
		}
		byID[id] = append(byID[id], e)
	}

	stored, err := mget[T](ctx, c, n.write, ids)
	if err != nil {
		return fmt.Errorf("read %d %s documents: %w", len(ids), kind, err)
	}

	type change struct {
		id      string
		version uint64
		body    []byte
	}
	var changes []change
	for _, id := range ids {
		doc := stored[id] // the zero document if the index has none
		before := version(&doc)
		for _, e := range byID[id] {
			if err := apply(&doc, e); err != nil {
				return err
			}
		}
		v := version(&doc)
		if v <= before {
			continue // nothing newer than what the index holds
		}
		prepare(&doc)
		body, err := json.Marshal(&doc)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", kind, id, err)
		}
		changes = append(changes, change{id, v, body})
	}
	if len(changes) == 0 {
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var (
		mu       sync.Mutex
		failures []error
		results  int
	)
	bi, err := esutil.NewBulkIndexer(esutil.BulkIndexerConfig{
		Client:       c.es,
		Index:        n.write,
		RequireAlias: true, // never let a missing alias auto-create an index without our mapping
		NumWorkers:   1,
		FlushBytes:   16 << 20, // one request per Write, unless the documents are very large
		Timeout:      c.timeout,
		// The indexer's workers send requests with their own background context: give them this
		// Write's, so that its deadline and cancellation bound the bulk requests too.
		OnFlushStart: func(context.Context) context.Context { return ctx },
	})
	if err != nil {
		return fmt.Errorf("bulk indexer: %w", err)
	}
	for _, ch := range changes {
		v := int64(ch.version)
		err := bi.Add(ctx, esutil.BulkIndexerItem{
			Action:      "index",
			DocumentID:  ch.id,
			Version:     &v,
			VersionType: "external",
			Body:        bytes.NewReader(ch.body),
			OnSuccess: func(context.Context, esutil.BulkIndexerItem, esutil.BulkIndexerResponseItem) {
				mu.Lock()
				defer mu.Unlock()
				results++
			},
			OnFailure: func(_ context.Context, item esutil.BulkIndexerItem, res esutil.BulkIndexerResponseItem, err error) {
				mu.Lock()
				defer mu.Unlock()
				results++
				switch {
				case err != nil:
					// The bulk request itself failed: the cluster, not the document.
					failures = append(failures, fmt.Errorf("index %s %s@%d: %w: %w", kind, item.DocumentID, *item.Version, search.ErrUnavailable, err))
				case res.Status == http.StatusConflict:
					// The index holds this version or a newer one: already applied.
				default:
					failures = append(failures, fmt.Errorf("index %s %s@%d: %w", kind, item.DocumentID, *item.Version,
						&Error{Status: res.Status, Type: res.Error.Type, Reason: describeItemError(res)}))
				}
			},
		})
		if err != nil {
			_ = bi.Close(ctx)
			return fmt.Errorf("bulk add %s %s: %w", kind, ch.id, err)
		}
	}
	if err := bi.Close(ctx); err != nil {
		return fmt.Errorf("bulk: %w: %w", search.ErrUnavailable, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if results != len(changes) {
		failures = append(failures, fmt.Errorf("bulk: %d of %d %s documents without a result", len(changes)-results, len(changes), kind))
	}
	return errors.Join(failures...)
}

// describeItemError returns a bulk item's error reason with its causes.
func describeItemError(res esutil.BulkIndexerResponseItem) string {
	s := res.Error.Reason
	if c := res.Error.Cause; c.Type != "" {
		s += "; caused by " + c.Type + ": " + c.Reason
	}
	return s
}

// mget returns the documents with the given ids that the index behind alias holds, by id. It reads
// in real time: what was indexed is returned even before a refresh.
func mget[T any](ctx context.Context, c *conn, alias string, ids []string) (map[string]T, error) {
	body, err := json.Marshal(map[string]any{"ids": ids})
	if err != nil {
		return nil, err
	}
	realtime := true
	res, err := c.do(ctx, esapi.MgetRequest{Index: alias, Body: bytes.NewReader(body), Realtime: &realtime})
	if err != nil {
		return nil, err
	}
	var r struct {
		Docs []struct {
			ID     string          `json:"_id"`
			Found  bool            `json:"found"`
			Source json.RawMessage `json:"_source"`
			Error  *errorCause     `json:"error"`
		} `json:"docs"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, fmt.Errorf("decode _mget response: %w", err)
	}
	docs := make(map[string]T, len(r.Docs))
	for _, d := range r.Docs {
		if d.Error != nil {
			return nil, fmt.Errorf("get %s: %w", d.ID, &Error{Type: d.Error.Type, Reason: d.Error.describe()})
		}
		if !d.Found {
			continue
		}
		var doc T
		if err := json.Unmarshal(d.Source, &doc); err != nil {
			return nil, fmt.Errorf("decode %s: %w", d.ID, err)
		}
		docs[d.ID] = doc
	}
	return docs, nil
}
