// Package postgres is the PostgreSQL full-text adapter of the search port ([search.Index]), the
// default engine, with the two projections that feed it ([Products], [Orders]).
//
// # Models
//
// The projections keep one row per product (search_products) and per order (search_orders),
// migrated with the read models (migrations/readmodel/002_search.sql). Like every PostgreSQL read
// model they are plain version-guarded statements that the projector runtime commits in the
// transaction that records the stream versions, so [Index.Refresh] has nothing to do: what a
// consistency token waited for is already searchable.
//
// Each row has a generated, weighted tsvector of the 'simple' configuration (lower case, no
// stemming, no stop words: the closest to Elasticsearch's standard analyzer) with a GIN index:
// product name A; SKU, tags and category B; description C; an order's customer name and email A,
// its SKUs and product names B. The projections also add every word of a document to a vocabulary
// table (search_product_words, search_order_words) with a pg_trgm trigram index: the candidates for
// typo corrections.
//
// # Matching
//
// A search with text takes two round trips, each a pipelined batch. The first has PostgreSQL parse
// the text with websearch_to_tsquery (user text is only ever a bind parameter) and looks up, for
// each word of three letters or more, the vocabulary words that share trigrams with it (the %
// operator, served by the trigram index). Go then widens each word of the parsed query to its
// alternatives and hands the result back as one tsquery:
//
//   - every word must match, as websearch_to_tsquery says ("quoted phrases", or and -exclusions
//     work too);
//   - the last word also matches as a prefix (wireless hea finds Wireless Headphones);
//   - a word of letters also matches the vocabulary words within Elasticsearch's AUTO fuzziness of
//     it: one edit for three to five letters, two beyond, counting a transposition as one edit
//     (optimal string alignment). Words with digits (SKUs) never match by typo;
//   - excluded words (after -) are matched exactly, never widened.
//
// Because corrections are real words of the vocabulary, the whole match is one tsquery on the GIN
// index, and ranking and highlighting see the corrected words too. The second round trip runs the
// page and the facet counts.
//
// Relevance is ts_rank_cd (weights A 1, B 0.4, C 0.2) of everything that matched plus that of the
// words as typed, so exact matches rank above prefixes and corrections; ties go to the id. The other
// sorts (price, -price, name case-insensitively by code point, newest) also end with the id, and
// pages continue with keyset conditions on the same expressions: cursors carry the last row's sort
// values ([search.EncodeCursor]), the relevance as the exact real PostgreSQL computed. Orders come
// newest first without text, by relevance then newest with text.
//
// Facets (product categories, order statuses) are counted by a GROUP BY with every filter but their
// own; the total is read from them, so the page itself needs no count. Highlights come from
// ts_headline, which escapes nothing: it marks matches with private-use characters, and Go escapes
// the snippet and turns the marks into <em> tags. Names are highlighted whole, descriptions as up to
// three fragments; a field is listed only when it has a match. ts_headline drops HTML tags from
// fragments, so a description's markup does not show in its snippets.
//
// # Differences from Elasticsearch
//
//   - Syntax: here "quoted phrases", or and -exclusion work; Elasticsearch matches the words and
//     ignores operators.
//   - Typos: both allow AUTO edits, but here a correction must also share enough trigrams with the
//     word to be a candidate (pg_trgm.similarity_threshold, 0.3 by default), so a typo in a very short
//     word (bob for rob) may go unnoticed; at most 50 corrections per word are used.
//   - Words: PostgreSQL's parser keeps some tokens whole that the standard tokenizer splits (an email
//     address is one word besides its parts; AUD-003 is aud followed by -003), and drops HTML tags
//     from highlights.
//   - Scores: ts_rank_cd here, BM25 there. The contract (search/searchtest) pins only orders every
//     sensible ranking agrees on.
//   - Freshness: committed is searchable here; Elasticsearch needs a refresh.
//
// pg_trgm must be installed in schema public (the migration does it when it may: the extension is
// trusted: a role with CREATE on the database can install it); every use of it is
// schema-qualified, so the models work in a schema of any name with any search_path.
package postgres
