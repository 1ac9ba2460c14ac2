package postgres

import (
	"html"
	"strings"
)

// ts_headline marks matches with StartSel and StopSel but escapes nothing, so it marks them with
// private-use characters that no text is expected to hold; [snippets] escapes the rest and turns the
// markers into <em> tags.
const (
	markStart = "\uE000"
	markStop  = "\uE001"
	markFrag  = "\uE002" // between fragments
)

// Options of ts_headline: short fields (names) whole, long ones (descriptions) as fragments.
const (
	headlineWhole     = `HighlightAll=true, StartSel="` + markStart + `", StopSel="` + markStop + `"`
	headlineFragments = `MaxFragments=3, MaxWords=20, MinWords=6, ShortWord=0, StartSel="` + markStart + `", StopSel="` +
		markStop + `", FragmentDelimiter="` + markFrag + `"`
)

// snippets turns ts_headline outputs into HTML snippets: the fragments that have a match, with the
// matches in <em>…</em> and everything else escaped. It returns nil when nothing matched.
func snippets(headlines ...string) []string {
	var out []string
	for _, h := range headlines {
		for frag := range strings.SplitSeq(h, markFrag) {
			if strings.Contains(frag, markStart) {
				out = append(out, render(frag))
			}
		}
	}
	return out
}

// render escapes s and turns its markers into tags, always balanced: a marker that opens nothing or
// closes nothing is dropped, whatever the text held.
func render(s string) string {
	s = strings.Join(strings.Fields(s), " ") // ts_headline leaves gaps where it drops HTML tags
	var b strings.Builder
	open := false
	for s != "" {
		i := strings.IndexAny(s, markStart+markStop)
		if i < 0 {
			b.WriteString(html.EscapeString(s))
			break
		}
		b.WriteString(html.EscapeString(s[:i]))
		switch {
		case strings.HasPrefix(s[i:], markStart):
			if !open {
				b.WriteString("<em>")
				open = true
			}
			s = s[i+len(markStart):]
		default:
			if open {
				b.WriteString("</em>")
				open = false
			}
			s = s[i+len(markStop):]
		}
	}
	if open {
		b.WriteString("</em>")
	}
	return b.String()
}
