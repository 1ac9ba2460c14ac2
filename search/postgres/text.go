package postgres

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// textQuery is a search's text as the tsqueries the SQL uses, in tsquery input syntax.
type textQuery struct {
	// match is the web-search query, every word widened to its alternatives: the last word also as a
	// prefix, and every word of letters also as its typo corrections. A document matches when it
	// matches the web-search query with each word replaced by any of its alternatives.
	match string
	// loose is any alternative of any word that is not excluded: it ranks documents by what matched
	// and marks the words to highlight.
	loose string
	// exact is any word that is not excluded, as typed: it ranks exact matches above corrections.
	exact string
}

// widen rewrites parsed, the output of websearch_to_tsquery, into a [textQuery]. corrections maps a
// word to vocabulary words within its edit distance ([corrections]). Only words of the query proper
// are widened, never excluded ones (after -), so an exclusion excludes exactly what it says.
func widen(parsed string, corrections map[string][]string) (textQuery, error) {
	toks, err := scanTSQuery(parsed)
	if err != nil {
		return textQuery{}, err
	}
	last := -1
	for i, t := range toks {
		if t.kind == tokLexeme {
			last = i
		}
	}
	var match strings.Builder
	var loose, exact []string
	negated := []bool{false} // per open parenthesis: is the group under an odd number of !
	pending := false         // a ! applies to the next operand or group
	for i, t := range toks {
		top := negated[len(negated)-1]
		switch t.kind {
		case tokNot:
			pending = !pending
			match.WriteString("!")
		case tokOpen:
			negated = append(negated, top != pending)
			pending = false
			match.WriteString("( ")
		case tokClose:
			if len(negated) == 1 {
				return textQuery{}, fmt.Errorf("tsquery %q: unbalanced parenthesis", parsed)
			}
			negated = negated[:len(negated)-1]
			match.WriteString(" )")
		case tokOperator:
			match.WriteString(" " + t.text + " ")
		case tokLexeme:
			neg := top != pending
			pending = false
			word := quoteLexeme(t.text) + t.suffix
			if neg {
				match.WriteString(word)
				continue
			}
			alts := []string{word}
			if i == last && t.suffix == "" {
				alts[0] = word + ":*"
			}
			if t.suffix == "" {
				for _, c := range corrections[t.text] {
					alts = append(alts, quoteLexeme(c))
				}
			}
			w := alts[0]
			if len(alts) > 1 {
				w = "( " + strings.Join(alts, " | ") + " )"
			}
			match.WriteString(w)
			loose = append(loose, alts...)
			exact = append(exact, word)
		}
	}
	if len(negated) != 1 {
		return textQuery{}, fmt.Errorf("tsquery %q: unbalanced parenthesis", parsed)
	}
	return textQuery{match: match.String(), loose: orOf(loose), exact: orOf(exact)}, nil
}

func orOf(operands []string) string {
	slices.Sort(operands)
	return strings.Join(slices.Compact(operands), " | ")
}

type tokenKind int

const (
	tokLexeme   tokenKind = iota // 'quoted lexeme', with an optional :* or weights suffix
	tokNot                       // !
	tokOperator                  // & | <-> <N>
	tokOpen                      // (
	tokClose                     // )
)

type token struct {
	kind   tokenKind
	text   string // the lexeme, unquoted; the operator as written
	suffix string // after a lexeme: ":*", ":AB", ":*B", as written
}

var errSyntax = errors.New("unexpected tsquery syntax")

// scanTSQuery splits the text form of a tsquery, as PostgreSQL writes it, into tokens.
func scanTSQuery(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		switch c := s[i]; c {
		case ' ':
			i++
		case '!':
			toks = append(toks, token{kind: tokNot, text: "!"})
			i++
		case '(':
			toks = append(toks, token{kind: tokOpen, text: "("})
			i++
		case ')':
			toks = append(toks, token{kind: tokClose, text: ")"})
			i++
		case '&', '|':
			toks = append(toks, token{kind: tokOperator, text: string(c)})
			i++
		case '<':
			end := strings.IndexByte(s[i:], '>')
			if end < 0 {
				return nil, fmt.Errorf("%w: %q", errSyntax, s)
			}
			toks = append(toks, token{kind: tokOperator, text: s[i : i+end+1]})
			i += end + 1
		case '\'':
			var lex strings.Builder
			i++
			closed := false
			for i < len(s) && !closed {
				switch {
				case s[i] == '\\' && i+1 < len(s):
					lex.WriteByte(s[i+1])
					i += 2
				case s[i] == '\'' && i+1 < len(s) && s[i+1] == '\'':
					lex.WriteByte('\'')
					i += 2
				case s[i] == '\'':
					closed = true
					i++
				default:
					lex.WriteByte(s[i])
					i++
				}
			}
			if !closed {
				return nil, fmt.Errorf("%w: %q", errSyntax, s)
			}
			t := token{kind: tokLexeme, text: lex.String()}
			if i < len(s) && s[i] == ':' {
				j := i + 1
				for j < len(s) && strings.IndexByte("*ABCDabcd", s[j]) >= 0 {
					j++
				}
				t.suffix = s[i:j]
				i = j
			}
			toks = append(toks, t)
		default:
			return nil, fmt.Errorf("%w: %q", errSyntax, s)
		}
	}
	return toks, nil
}

// quoteLexeme writes a lexeme in tsquery input syntax.
func quoteLexeme(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(s) + "'"
}

// fuzziness is how many edits a typo may make to word, as Elasticsearch's AUTO fuzziness: none for
// words of one or two letters, one up to five, two beyond. Words with anything but letters (digits:
// SKUs, numbers) get none, so AUD-003 never finds AUD-001.
func fuzziness(word string) int {
	n := utf8.RuneCountInString(word)
	switch {
	case n < 3 || strings.ContainsFunc(word, func(r rune) bool { return !unicode.IsLetter(r) }):
		return 0
	case n <= 5:
		return 1
	default:
		return 2
	}
}

// corrections keeps, of candidates (vocabulary words that share trigrams with each word), those
// within the word's [fuzziness] and other than the word.
func corrections(candidates map[string][]string) map[string][]string {
	out := map[string][]string{}
	for word, cands := range candidates {
		limit := fuzziness(word)
		if limit == 0 {
			continue
		}
		w := []rune(word)
		for _, c := range cands {
			if c != word && editDistance(w, []rune(c), limit) <= limit {
				out[word] = append(out[word], c)
			}
		}
	}
	return out
}

// editDistance is the optimal string alignment distance between a and b (insertions, deletions,
// substitutions and transpositions of neighbours each count one, as Lucene's fuzzy queries count
// them), or limit+1 when it exceeds limit.
func editDistance(a, b []rune, limit int) int {
	if d := len(a) - len(b); d > limit || -d > limit {
		return limit + 1
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		lowest := cur[0]
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
			lowest = min(lowest, cur[j])
		}
		if lowest > limit {
			return limit + 1
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit+1)
}
