package postgres

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/strata-dev/strata/internal/pgtest"
)

func TestWiden(t *testing.T) {
	for name, tc := range map[string]struct {
		parsed      string
		corrections map[string][]string
		want        textQuery
	}{
		"one word is a prefix": {
			parsed: `'kettle'`,
			want:   textQuery{match: `'kettle':*`, loose: `'kettle':*`, exact: `'kettle'`},
		},
		"the last word is a prefix, every word has its corrections": {
			parsed:      `'wireless' & 'hea'`,
			corrections: map[string][]string{"wireless": {"wirelss"}, "hea": {"tea"}},
			want: textQuery{
				match: `( 'wireless' | 'wirelss' ) & ( 'hea':* | 'tea' )`,
				loose: `'hea':* | 'tea' | 'wireless' | 'wirelss'`,
				exact: `'hea' | 'wireless'`,
			},
		},
		"exclusions stay exact": {
			parsed:      `'litre' & !'kettle'`,
			corrections: map[string][]string{"kettle": {"kettles"}, "litre": {"liter"}},
			want: textQuery{
				match: `( 'litre' | 'liter' ) & !'kettle'`,
				loose: `'liter' | 'litre'`,
				exact: `'litre'`,
			},
		},
		"an excluded phrase": {
			parsed: `'wireless' & !( 'noise' <-> 'cancelling' ) & 'x'`,
			want: textQuery{
				match: `'wireless' & !( 'noise' <-> 'cancelling' ) & 'x':*`,
				loose: `'wireless' | 'x':*`,
				exact: `'wireless' | 'x'`,
			},
		},
		"double negation": {
			parsed: `!( 'a' & !'b' )`,
			want:   textQuery{match: `!( 'a' & !'b':* )`, loose: `'b':*`, exact: `'b'`},
		},
		"a phrase ends with a prefix": {
			parsed:      `'usb-c' <-> 'usb' <-> 'c' | 'cable'`,
			corrections: map[string][]string{"cable": {"table"}},
			want: textQuery{
				match: `'usb-c' <-> 'usb' <-> 'c' | ( 'cable':* | 'table' )`,
				loose: `'c' | 'cable':* | 'table' | 'usb' | 'usb-c'`,
				exact: `'c' | 'cable' | 'usb' | 'usb-c'`,
			},
		},
		"quotes and backslashes": {
			parsed: `'o''b\\r' <2> 'x'`,
			want:   textQuery{match: `'o''b\\r' <2> 'x':*`, loose: `'o''b\\r' | 'x':*`, exact: `'o''b\\r' | 'x'`},
		},
		"weights and prefixes as written": {
			parsed: `'a':AB & 'b':*`,
			want:   textQuery{match: `'a':AB & 'b':*`, loose: `'a':AB | 'b':*`, exact: `'a':AB | 'b':*`},
		},
	} {
		got, err := widen(tc.parsed, tc.corrections)
		require.NoError(t, err, name)
		require.Equal(t, tc.want, got, name)
	}
	for _, bad := range []string{`'open`, `'a' & (`, `'a' )`, `a`, `'a' <- 'b'`} {
		_, err := widen(bad, nil)
		require.Error(t, err, bad)
	}
}

// What PostgreSQL makes of any text, widen turns into tsqueries PostgreSQL takes.
func TestWidenTakesWhatPostgreSQLWrites(t *testing.T) {
	t.Parallel()
	pool := pgtest.Pool(t, 1)
	for _, text := range []string{
		`wireless hea`, `"desk lamp" -kettle or teapot`, `usb-c`, `HOM-001`, `bob@shop.example`, `O'Brien`,
		`a\b`, `C:\Users\x's`, `http://example.com/a'b?c=d`, `-"noise cancelling" -x y`, `!( a | b )`,
		`or or -or`, `""`, `'; DROP TABLE products; --`, `日本語 😀`, `1.5e10 -3 0x1F`, `a <-> b <2> c`,
	} {
		var parsed string
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT websearch_to_tsquery('simple', $1)::text`, text).Scan(&parsed))
		tq, err := widen(parsed, map[string][]string{"wireless": {"it's", `back\slash`}})
		require.NoError(t, err, "%q: %q", text, parsed)
		for _, q := range []string{tq.match, tq.loose, tq.exact} {
			var again string
			require.NoError(t, pool.QueryRow(t.Context(), `SELECT $1::text::tsquery::text`, q).Scan(&again), "%q: %q", text, q)
		}
		// Unwidened, the query is PostgreSQL's own.
		toks, err := scanTSQuery(parsed)
		require.NoError(t, err)
		var rewritten string
		for _, tok := range toks {
			if tok.kind == tokLexeme {
				rewritten += quoteLexeme(tok.text) + tok.suffix
			} else {
				rewritten += " " + tok.text + " "
			}
		}
		var same bool
		require.NoError(t, pool.QueryRow(t.Context(), `SELECT $1::text::tsquery = $2::text::tsquery`, rewritten, parsed).Scan(&same))
		require.True(t, same, "%q: %q is not %q", text, rewritten, parsed)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b  string
		limit int
		want  int
	}{
		{"kettle", "kettle", 2, 0},
		{"ketle", "kettle", 1, 1},
		{"headphnes", "headphones", 2, 1},
		{"speeker", "speaker", 2, 1},
		{"marten", "martin", 2, 1},
		{"gadgte", "gadget", 2, 1}, // a transposition is one edit
		{"lmap", "lamp", 1, 1},
		{"kettle", "kettleby", 2, 2},
		{"kettle", "kettlebyx", 2, 3}, // too long: limit+1
		{"abcdef", "ghijkl", 2, 3},    // too far: limit+1
		{"crème", "creme", 1, 1},      // runes, not bytes
		{"", "abc", 3, 3},
		{"ca", "abc", 3, 3}, // optimal string alignment: no edit of a transposed pair
	} {
		require.Equal(t, tc.want, editDistance([]rune(tc.a), []rune(tc.b), tc.limit), "%s %s", tc.a, tc.b)
		require.Equal(t, tc.want, editDistance([]rune(tc.b), []rune(tc.a), tc.limit), "%s %s", tc.b, tc.a)
	}
}

func TestCorrections(t *testing.T) {
	got := corrections(map[string][]string{
		"ketle":   {"ketle", "kettle", "kettles", "little"}, // one edit for five letters
		"marten":  {"martin", "mart", "marathon"},           // two for six
		"hea":     {"tea", "head", "heat", "sea"},
		"ab":      {"abc"},       // two letters: exact only
		"aud003":  {"aud001"},    // a digit: exact only
		"naïve":   {"naive"},     // letters of any script
		"missing": {"something"}, // nothing close enough
	})
	require.Equal(t, map[string][]string{
		"ketle":  {"kettle"},
		"marten": {"martin", "mart"},
		"hea":    {"tea", "head", "heat", "sea"},
		"naïve":  {"naive"},
	}, got)
}

func TestSnippets(t *testing.T) {
	m := func(s string) string { return markStart + s + markStop }
	require.Nil(t, snippets("no match here", ""))
	require.Equal(t, []string{`&lt;script&gt; <em>Lamp</em> &amp; Shade`}, snippets("<script> "+m("Lamp")+" & Shade"))
	require.Equal(t, []string{`a <em>lamp</em> bold`, `the <em>wireless</em> <em>base</em>`},
		snippets("a "+m("lamp")+"  bold"+markFrag+"nothing"+markFrag+"the "+m("wireless")+" "+m("base")))
	require.Equal(t, []string{`<em>Bob</em> Stone`}, snippets("Alice", m("Bob")+" Stone"))
	// Markers in the text itself never unbalance the tags.
	require.Equal(t, []string{`x<em>y</em>`}, snippets("x"+markStop+markStart+"y"+markStart))
	require.Equal(t, []string{`<em>a</em>b`}, snippets(m("a")+"b"+markStop))
}
