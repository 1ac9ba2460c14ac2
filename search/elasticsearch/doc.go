// Package elasticsearch is the Elasticsearch adapter of the search port ([search.Index]), with the
// two projections that feed it ([Products], [Orders]). It needs only the core of Elasticsearch 8
// (no scripts, no analysis-common filters, no mapper-extras): the standard analyzer, keyword
// fields with the built-in lowercase normalizer, match, multi_match and match_bool_prefix queries,
// terms aggregations, the unified highlighter and search_after.
//
// # Indices and aliases
//
// Each model lives in a versioned index, <prefix>-products-v1 and <prefix>-orders-v1, created from
// an index template with an explicit, strict mapping (migrations/elasticsearch). Nothing addresses
// an index by its name: searches and refreshes go through the read alias (<prefix>-products), the
// projections read and write through the write alias (<prefix>-products-write, is_write_index). A
// rebuild can then fill a new version through the write alias while searches still read the old one,
// and switch the read alias in one atomic _aliases call. The write alias must name exactly one
// index: Elasticsearch refuses realtime gets through an alias of several. [Index.Setup] puts the
// templates and creates the first version with both aliases when they are missing; it is idempotent
// and safe to run from several processes at once.
//
// # Writing: whole documents, external versions
//
// A search document is the fold of its stream (search.ApplyProduct, search.ApplyOrder). A projection
// batch ([Products.Write]) fetches the current documents of its streams in one realtime _mget, folds
// the batch's events onto them (events at or below a document's version change nothing) and indexes
// every changed document once, in one _bulk request, with version = the stream version of its last
// event and version_type = external. Elasticsearch refuses a version at or below the one it holds
// with 409, which means a newer or equal document is already there: that is success. So a
// redelivered batch, two projector processes racing, or a crash between the bulk request and the
// PostgreSQL commit never move a document back. Any other item failure fails the Write with the
// document and Elasticsearch's error type and reason; the projector runtime then retries event by
// event and parks what keeps failing.
//
// Writes never refresh. Elasticsearch makes them searchable on its own schedule (refresh_interval,
// 1s by default, paused on search-idle shards). A search that carries a consistency token first waits
// until the projection has committed the token's streams (projection_streams in PostgreSQL, written
// in the same transaction that follows the successful bulk request), then calls [Index.Refresh]: an
// explicit _refresh on the read aliases, so what was committed is searchable. Concurrent callers share
// refreshes: a caller waits for a refresh that started after it called; one already running does not
// count, the next one (shared by everyone who arrived meanwhile) does. Under load this costs one
// refresh per refresh duration, not one per request.
//
// # Searching
//
// User text is only ever the query text of match-family queries, never query_string syntax. It is
// split at white space into words, and every word must match some field: each word is a bool of
// alternatives (a fuzzy multi_match over the text fields with operator and, an exact term on the SKU
// keyword fields, and for the last word a match_bool_prefix and a SKU prefix). Words with a digit get
// no fuzziness, so AUD-003 does not find AUD-001; words without a letter or digit (stray
// punctuation) are ignored, and text made only of them matches nothing. Names weigh three times
// more than other fields.
//
// Filters are bool filters. The facet of the field a query filters on (category for products,
// status for orders) is a terms aggregation of the main query, while that one filter is a post_filter,
// so the facet counts ignore it and every other filter narrows them. Totals are exact
// (track_total_hits). Sorts end with the id (a keyword field, not _id), and pages continue with
// search_after through cursors bound to the query's fingerprint; the sort values of a cursor are kept
// as the JSON Elasticsearch returned, so a relevance score survives the round trip bit for bit.
// Highlights use the html encoder: matched words in <em>, everything else escaped; names come whole
// (number_of_fragments 0), descriptions as fragments. They are computed with a lighter query than
// the search (at most one edit per word): the highlighter rebuilds a fuzzy word's automaton for
// every field of every hit, and two-edit automata made text searches ten times slower. A word found
// through two edits is therefore not highlighted.
//
// Dates are stored with millisecond precision (the date type): documents are indexed with their
// times truncated to the millisecond, and time filters round their bounds up to it, so From stays
// inclusive and To exclusive for times with finer precision.
//
// # Differences from PostgreSQL full-text search
//
//   - Syntax: search/postgres parses text with websearch_to_tsquery ("quoted phrases", or,
//     -exclusion); here those characters are just punctuation between words.
//   - Typos: both allow AUTO edits (one for three to five characters, two beyond, none for words
//     with digits); here the fuzzy query finds them in the index's terms, there a trigram
//     vocabulary proposes candidates, which can miss typos in very short words.
//   - Words: the standard tokenizer splits what it splits (bob@shop.example is bob and
//     shop.example, AUD-003 is aud and 003; SKUs are matched as whole keywords instead). There is
//     no stemming on either side.
//   - Scores: BM25 here, ts_rank_cd there. The contract (search/searchtest) pins only orders every
//     sensible ranking agrees on.
//   - Freshness: here a write is searchable after a refresh, there once committed.
//   - Prefixes use match_bool_prefix rather than index_prefixes, whose subfield queries the
//     highlighter does not map back to the field; search_as_you_type is not in the core
//     distribution.
package elasticsearch
