// Package check collects input problems for the aggregates under domain, so that each decision can
// report all of them at once in a [domain.ValidationError].
package check

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/strata-dev/strata/domain"
)

// Problems accumulates field problems. The zero value is ready to use.
type Problems struct {
	list []domain.FieldProblem
}

// Add records that field is invalid, with a message formatted from format and args.
func (p *Problems) Add(field, format string, args ...any) {
	p.list = append(p.list, domain.FieldProblem{Field: field, Message: fmt.Sprintf(format, args...)})
}

// Err returns a *domain.ValidationError with every problem added, or nil when there was none.
func (p *Problems) Err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &domain.ValidationError{Problems: p.list}
}

// Line trims s and checks that it is valid UTF-8, holds between minRunes and maxRunes runes and no
// control characters. It returns the trimmed text, which is what the aggregate stores.
func (p *Problems) Line(field, s string, minRunes, maxRunes int) string {
	return p.text(field, s, minRunes, maxRunes, false)
}

// Text is [Problems.Line] for multi-line text: it also allows line breaks and tabs.
func (p *Problems) Text(field, s string, minRunes, maxRunes int) string {
	return p.text(field, s, minRunes, maxRunes, true)
}

func (p *Problems) text(field, s string, minRunes, maxRunes int, multiline bool) string {
	s = strings.TrimSpace(s)
	if !utf8.ValidString(s) {
		p.Add(field, "must be valid UTF-8")
		return s
	}
	n := utf8.RuneCountInString(s)
	switch {
	case n == 0 && minRunes > 0:
		p.Add(field, "is required")
		return s
	case n < minRunes || n > maxRunes:
		if minRunes == 0 {
			p.Add(field, "must be at most %d characters", maxRunes)
		} else {
			p.Add(field, "must be between %d and %d characters", minRunes, maxRunes)
		}
		return s
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
			p.Add(field, "must not contain control characters")
			break
		}
	}
	return s
}

// Currency normalizes s to upper case and checks that it is three ASCII letters, an ISO 4217 code.
func (p *Problems) Currency(field, s string) string {
	s = strings.ToUpper(strings.TrimSpace(s))
	if len(s) != 3 || strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		p.Add(field, "must be a three-letter currency code")
	}
	return s
}
