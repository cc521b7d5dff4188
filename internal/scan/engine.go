package scan

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/mayfly-sh/mayfly/internal/token"
)

// encoding names a transport encoding under which secrets are looked for.
type encoding uint8

const (
	encNone encoding = iota
	encBase64
	encHex
	encPercent
	encHexSep // hex with a separator between the bytes (hexSeps)
	numEnc
)

// hexSeps are the separators that one-line hex dumps put between bytes:
// Go's "% x", hexdump -ve and Python's bytes.hex(" "); colons (openssl,
// Java's HexFormat); dashes (.NET's BitConverter.ToString). The masker
// masks the same (internal/mask, forms.go).
const hexSeps = " :-"

func (e encoding) String() string {
	switch e {
	case encBase64:
		return "base64"
	case encHex, encHexSep:
		return "hex"
	case encPercent:
		return "percent"
	}
	return ""
}

// maxDepth bounds how many encodings deep a decoded span is rescanned.
const maxDepth = 2

// maxSpan bounds how far an encoded span is followed either side of the
// keyword that revealed it.
const maxSpan = 16 << 10

// cutMargin: a span cut at maxSpan ends that much before the cut for the
// keywords after it (spanE), so that a secret whose encoding straddles the
// cut, decoded cut off, is decoded whole from its own keyword. 6 KiB holds
// the base64 of an RSA-4096 private key.
const cutMargin = 6 << 10

type kwEntry struct {
	lit   string
	cs    bool
	rules []int
	enc   encoding
}

// engine finds raw matches in one buffer. It is immutable after
// construction and safe for concurrent use.
type engine struct {
	rules     []*rule
	ac        *acMatcher
	kws       []kwEntry
	mayflyJob int // rule indices, -1 when disabled
	mayflyAdm int
	mayflyPw  int
	decode    bool
	fullRules []int // rules without keywords: the regexp runs over everything
	fileRules []int // rules for files of given names (.pgpass): run over such files whole
}

func newEngine(rules []*rule, decode bool) (*engine, error) {
	e := &engine{rules: rules, decode: decode, mayflyJob: -1, mayflyAdm: -1, mayflyPw: -1}
	index := map[string]int{}
	addKW := func(lit string, cs bool, enc encoding, ri int) {
		key := fmt.Sprintf("%d\x00%t\x00%s", enc, cs, lit)
		if !cs {
			key = fmt.Sprintf("%d\x00%t\x00%s", enc, cs, strings.ToLower(lit))
		}
		i, ok := index[key]
		if !ok {
			i = len(e.kws)
			index[key] = i
			e.kws = append(e.kws, kwEntry{lit: lit, cs: cs, enc: enc})
		}
		if ri >= 0 && !slices.Contains(e.kws[i].rules, ri) {
			e.kws[i].rules = append(e.kws[i].rules, ri)
		}
	}
	var plain []keyword
	for ri, r := range rules {
		switch r.id {
		case RuleMayflyJob:
			e.mayflyJob = ri
			plain = append(plain, keyword{lit: token.JobPrefix, cs: true})
			continue
		case RuleMayflyAdmin:
			e.mayflyAdm = ri
			plain = append(plain, keyword{lit: token.AdminPrefix, cs: true})
			continue
		case RuleMayflyPassword:
			e.mayflyPw = ri
			plain = append(plain, keyword{lit: token.PasswordPrefix, cs: true})
			continue
		}
		if len(r.files) > 0 {
			e.fileRules = append(e.fileRules, ri)
		} else if len(r.keywords) == 0 {
			e.fullRules = append(e.fullRules, ri)
		}
		for _, k := range r.keywords {
			addKW(k.lit, k.cs, encNone, ri)
			plain = append(plain, k)
		}
	}
	if decode {
		for _, k := range plain {
			forms := []string{k.lit}
			if !k.cs {
				l := strings.ToLower(k.lit)
				for _, f := range []string{l, strings.ToUpper(l), strings.ToUpper(l[:1]) + l[1:]} {
					if !slices.Contains(forms, f) {
						forms = append(forms, f)
					}
				}
			}
			for _, f := range forms {
				for _, v := range base64Variants(f) {
					addKW(v, false, encBase64, -1)
				}
				// Base64 of UTF-16LE text: PowerShell's -EncodedCommand.
				// The decoded span is UTF-16, which scan reads without
				// its NULs.
				if u, ok := utf16LE(f); ok {
					for _, v := range base64Variants(u) {
						addKW(v, false, encBase64, -1)
					}
				}
				// Keywords of two characters (Twilio's "SK", Entra's "Q~") are
				// too short for a base64 trigger, not for hex or percent.
				if len(f) >= 2 {
					addKW(hex.EncodeToString([]byte(f)), false, encHex, -1)
					for i := 0; i < len(hexSeps); i++ {
						addKW(hexSepEncode(f, hexSeps[i]), false, encHexSep, -1)
					}
				}
				if len(f) >= 2 {
					var sb strings.Builder
					for i := 0; i < len(f); i++ {
						fmt.Fprintf(&sb, "%%%02x", f[i])
					}
					addKW(sb.String(), false, encPercent, -1)
				}
			}
		}
		// Encoded '+', '/', '=', '_' and ':' reveal percent-encoded values.
		for _, t := range []string{"%2b", "%2f", "%3d", "%5f", "%3a"} {
			addKW(t, false, encPercent, -1)
		}
	}
	if len(e.kws) > 0 {
		words := make([]string, len(e.kws))
		for i, k := range e.kws {
			words[i] = k.lit
		}
		ac, err := newACMatcher(words)
		if err != nil {
			return nil, err
		}
		e.ac = ac
	}
	return e, nil
}

// hexSepEncode is s in lower-case hex with sep between each two bytes.
func hexSepEncode(s string, sep byte) string {
	h := hex.EncodeToString([]byte(s))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(sep)
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// utf16LE is the ASCII s in UTF-16LE; false when s is not ASCII.
func utf16LE(s string) (string, bool) {
	b := make([]byte, 0, 2*len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return "", false
		}
		b = append(b, s[i], 0)
	}
	return string(b), true
}

// base64Variants returns, for each of the three alignments, the part of
// the base64 encoding of s that does not depend on the bytes around it.
func base64Variants(s string) []string {
	var out []string
	for r := 0; r < 3; r++ {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, r), s...))
		start := [3]int{0, 2, 3}[r]
		end := (r + len(s)) * 8 / 6
		if end-start < 4 {
			continue
		}
		v := enc[start:end]
		out = append(out, v)
		if u := strings.NewReplacer("+", "-", "/", "_").Replace(v); u != v {
			out = append(out, u)
		}
	}
	return out
}

type rawMatch struct {
	rule     int
	pos, end int // location in the scanned buffer (end: of the secret, or pos+1 when decoded)
	secret   string
	verified bool
	enc      string
}

type scanState struct {
	e          *engine
	b          []byte
	own0, own1 int
	depth      int
	code       bool // b is source code: an unquoted value is an expression, not a literal
	winS, winE []int
	seen       map[uint64]struct{}
	spanE      [numEnc]int
	out        []rawMatch
}

func (st *scanState) dup(ri, pos int, decoded bool) bool {
	if st.seen == nil {
		st.seen = map[uint64]struct{}{}
	}
	k := uint64(ri)<<48 | uint64(pos)
	if decoded {
		k |= 1 << 63
	}
	if _, ok := st.seen[k]; ok {
		return true
	}
	st.seen[k] = struct{}{}
	return false
}

// add records a secret b[s:e] found by rule ri, when it starts in the
// owned part of the buffer.
func (st *scanState) add(ri, s, e int, verified bool) {
	if s < st.own0 || s >= st.own1 || st.dup(ri, s, false) {
		return
	}
	st.out = append(st.out, rawMatch{rule: ri, pos: s, end: e, secret: string(st.b[s:e]), verified: verified})
}

// scan returns the matches that start in b[own0:own1]; b around it is
// context. Matches are in no particular order. A buffer holding terminal
// codes, or with decoding on wrapped base64 lines, is scanned a second
// time without them (termcodes.go), its matches placed back at their
// offsets in b; the common buffer costs one search for ESC and '\r' and a
// look at the end of some of its lines. So is UTF-16 text, without its
// NUL bytes, a GitLab job log with timestamps, its continued lines
// joined, hex dump lines, as the bytes they spell (dumpLine), and JSON
// text through its \u00XX and \/ escapes.
func (e *engine) scan(b []byte, own0, own1, depth int, file string) []rawMatch {
	out := e.scanOnce(b, own0, own1, depth, file)
	o := stripOpts{wraps: e.decode, nuls: isUTF16(b), joins: depth == 0 && isGitLabLog(b), qp: depth == 0 && isQuotedPrintable(b),
		dumps: e.decode && depth == 0 && hasHexDump(b), jsonEsc: depth == 0 && hasJSONEscape(b)}
	if !o.nuls && !o.joins && !o.qp && !o.dumps && !o.jsonEsc && (depth > 0 || !hasTermCodes(b) && !(e.decode && hasWrap(b))) {
		return out
	}
	type key struct {
		rule, pos int
		decoded   bool
	}
	seen := make(map[key]bool, len(out))
	// A decoded secret is placed only about where its encoding is, and
	// an encoding joined across a wrap is placed from the wrap's start:
	// one the first scan decoded is not reported again from there.
	type secretKey struct {
		rule   int
		secret string
	}
	decoded := map[secretKey]bool{}
	for _, m := range out {
		seen[key{m.rule, m.pos, m.enc != ""}] = true
		if m.enc != "" {
			decoded[secretKey{m.rule, m.secret}] = true
		}
	}
	n := len(out)
	variants := []stripOpts{o}
	if o.dumps {
		// The dump's groups in the other byte order too (dumpLine).
		sw := o
		sw.dumpsSwapped = true
		variants = append(variants, sw)
	}
	for _, v := range variants {
		nb, at := stripTermCodes(b, v)
		o0, _ := slices.BinarySearch(at, own0)
		o1, _ := slices.BinarySearch(at, own1)
		for _, m := range e.scanOnce(nb, o0, o1, depth, file) {
			m.pos, m.end = at[m.pos], at[m.end-1]+1
			if k := (key{m.rule, m.pos, m.enc != ""}); !seen[k] && (m.enc == "" || !decoded[secretKey{m.rule, m.secret}]) {
				seen[k] = true
				out = append(out, m)
			}
		}
	}
	if len(out) > n {
		out = dropShadowedGeneric(e, out)
	}
	return out
}

// scanOnce is scan over b as it is.
func (e *engine) scanOnce(b []byte, own0, own1, depth int, file string) []rawMatch {
	st := &scanState{e: e, b: b, own0: own0, own1: own1, depth: depth, code: isSourceCode(file)}
	if len(e.fileRules) > 0 && file != "" {
		base := file[strings.LastIndexAny(file, "/\\")+1:]
		for _, ri := range e.fileRules {
			if slices.Contains(e.rules[ri].files, base) {
				e.rules[ri].match(st, ri, b, 0, 0)
			}
		}
	}
	if e.mayflyJob >= 0 || e.mayflyAdm >= 0 {
		for _, m := range token.Find(b) {
			ri := e.mayflyJob
			if m.Kind == token.Admin {
				ri = e.mayflyAdm
			}
			if ri >= 0 {
				st.add(ri, m.Offset, m.Offset+len(m.Token), true)
			}
		}
	}
	if e.mayflyPw >= 0 {
		for _, m := range token.FindPasswords(b) {
			st.add(e.mayflyPw, m.Offset, m.Offset+len(m.Password), true)
		}
	}
	if e.ac != nil {
		st.winS = make([]int, len(e.rules))
		st.winE = make([]int, len(e.rules))
		for i := range st.winS {
			st.winS[i], st.winE[i] = -1, -1
		}
		e.ac.each(b, func(kw, end int) {
			k := &e.kws[kw]
			ks := end - len(k.lit)
			if k.cs && string(b[ks:end]) != k.lit {
				return
			}
			if k.enc != encNone {
				if e.decode && depth < maxDepth {
					st.decodeHit(k.enc, ks, end)
				}
				return
			}
			for _, ri := range k.rules {
				e.rules[ri].match(st, ri, b, ks, end)
			}
		})
	}
	for _, ri := range e.fullRules {
		regexWindow(st, ri, e.rules[ri], b, 0, len(b))
	}
	out := st.out
	if st.seen != nil {
		// A decoded match that the plain scan also found at the same place
		// (a percent-encoded line whose secret needed no escaping) is a repeat.
		out = out[:0]
		for _, m := range st.out {
			if m.enc != "" {
				if _, ok := st.seen[uint64(m.rule)<<48|uint64(m.pos)]; ok {
					continue
				}
			}
			out = append(out, m)
		}
	}
	return dropShadowedGeneric(e, out)
}

// dropShadowedGeneric removes generic findings whose secret overlaps a
// finding of a specific rule.
func dropShadowedGeneric(e *engine, ms []rawMatch) []rawMatch {
	hasGeneric := false
	for _, m := range ms {
		if e.rules[m.rule].generic {
			hasGeneric = true
			break
		}
	}
	if !hasGeneric || len(ms) < 2 {
		return ms
	}
	var spec [][2]int
	for _, m := range ms {
		if !e.rules[m.rule].generic {
			spec = append(spec, [2]int{m.pos, m.end})
		}
	}
	slices.SortFunc(spec, func(a, b [2]int) int { return a[0] - b[0] })
	out := ms[:0]
	for _, m := range ms {
		if e.rules[m.rule].generic {
			// spec intervals starting before m.end; any overlapping?
			i, _ := slices.BinarySearchFunc(spec, m.end, func(a [2]int, t int) int { return a[0] - t })
			shadow := false
			for j := i - 1; j >= 0 && j >= i-8; j-- {
				if spec[j][1] > m.pos {
					shadow = true
					break
				}
			}
			if shadow {
				continue
			}
		}
		out = append(out, m)
	}
	return out
}

// decodeHit decodes the encoded span around b[ks:ke] and rescans it.
func (st *scanState) decodeHit(enc encoding, ks, ke int) {
	b := st.b
	if ks < st.spanE[enc] {
		return
	}
	if enc == encHexSep {
		st.decodeHexSep(ks, ke)
		return
	}
	var set *charset
	switch enc {
	case encBase64:
		set = setB64Any
	case encHex:
		set = setHex
	default:
		set = setPct
	}
	s := ks
	for s > 0 && ks-s < maxSpan && set[b[s-1]] {
		s--
	}
	e := ke
	for e < len(b) && e-ke < maxSpan && set[b[e]] {
		e++
	}
	st.spanE[enc] = e
	if e < len(b) && set[b[e]] {
		st.spanE[enc] = e - cutMargin // cut, not ended: see cutMargin
	}
	switch enc {
	case encBase64:
		for off := 0; off < 4 && s+off < e; off++ {
			dec := decodeBase64(b[s+off : e])
			if len(dec) < 8 {
				continue
			}
			n := len(st.out)
			for _, m := range st.e.scan(dec, 0, len(dec), st.depth+1, "") {
				st.addDecoded(m, s+off+m.pos*4/3, enc)
			}
			if len(st.out) > n {
				break
			}
		}
	case encHex:
		for off := 0; off < 2 && s+off < e; off++ {
			src := b[s+off : e]
			src = src[:len(src)&^1]
			dec := make([]byte, len(src)/2)
			n, _ := hex.Decode(dec, src)
			dec = dec[:n]
			if len(dec) < 8 {
				continue
			}
			before := len(st.out)
			for _, m := range st.e.scan(dec, 0, len(dec), st.depth+1, "") {
				st.addDecoded(m, s+off+2*m.pos, enc)
			}
			if len(st.out) > before {
				break
			}
		}
	case encPercent:
		dec, pos := percentDecode(b[s:e])
		if len(dec) == e-s || len(dec) < 8 {
			return
		}
		for _, m := range st.e.scan(dec, 0, len(dec), st.depth+1, "") {
			st.addDecoded(m, s+pos[m.pos], enc)
		}
	}
}

// decodeHexSep decodes the run of separated hex bytes around b[ks:ke]
// (two digits, the keyword's separator, two digits…) and rescans it.
func (st *scanState) decodeHexSep(ks, ke int) {
	b := st.b
	sep := b[ks+2]
	pair := func(i int) bool { return i >= 0 && i+2 <= len(b) && setHex[b[i]] && setHex[b[i+1]] }
	s := ks
	for ks-s < maxSpan && s >= 3 && b[s-1] == sep && pair(s-3) {
		s -= 3
	}
	e := ke
	for e-ke < maxSpan && e < len(b) && b[e] == sep && pair(e+1) {
		e += 3
	}
	st.spanE[encHexSep] = e
	if e < len(b) && b[e] == sep && pair(e+1) {
		st.spanE[encHexSep] = e - cutMargin // cut, not ended: see cutMargin
	}
	dec := make([]byte, 0, (e-s+1)/3)
	for i := s; i+2 <= e; i += 3 {
		h, _ := unhex(b[i])
		l, _ := unhex(b[i+1])
		dec = append(dec, h<<4|l)
	}
	if len(dec) < 8 {
		return
	}
	for _, m := range st.e.scan(dec, 0, len(dec), st.depth+1, "") {
		st.addDecoded(m, s+3*m.pos, encHexSep)
	}
}

func (st *scanState) addDecoded(m rawMatch, pos int, enc encoding) {
	if pos < st.own0 || pos >= st.own1 {
		return
	}
	if st.dup(m.rule, pos, true) {
		return
	}
	name := enc.String()
	if m.enc != "" {
		name += "+" + m.enc
	}
	st.out = append(st.out, rawMatch{rule: m.rule, pos: pos, end: pos + 1, secret: m.secret, verified: m.verified, enc: name})
}

func decodeBase64(src []byte) []byte {
	tmp := make([]byte, len(src))
	n := 0
	for _, c := range src {
		switch c {
		case '-':
			c = '+'
		case '_':
			c = '/'
		}
		tmp[n] = c
		n++
	}
	tmp = tmp[:n]
	if len(tmp)%4 == 1 {
		tmp = tmp[:len(tmp)-1]
	}
	dst := make([]byte, base64.RawStdEncoding.DecodedLen(len(tmp)))
	k, _ := base64.RawStdEncoding.Decode(dst, tmp)
	return dst[:k]
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// percentDecode decodes %XX escapes ('+' as a space, as in query strings) and returns, for each output byte, the
// offset in src it came from.
func percentDecode(src []byte) ([]byte, []int) {
	out := make([]byte, 0, len(src))
	pos := make([]int, 0, len(src))
	for i := 0; i < len(src); {
		if src[i] == '%' && i+2 < len(src) {
			h, ok1 := unhex(src[i+1])
			l, ok2 := unhex(src[i+2])
			if ok1 && ok2 {
				out = append(out, h<<4|l)
				pos = append(pos, i)
				i += 3
				continue
			}
		}
		c := src[i]
		if c == '+' {
			c = ' '
		}
		out = append(out, c)
		pos = append(pos, i)
		i++
	}
	return out, pos
}

// allowed reports whether the line holding b[pos] carries a mayfly:allow
// comment, in UTF-8 or in UTF-16 (either byte order: inside the marker
// its characters and zeros alternate the same way).
var (
	allowMarker   = []byte("mayfly:allow")
	allowMarker16 = []byte("m\x00a\x00y\x00f\x00l\x00y\x00:\x00a\x00l\x00l\x00o\x00w")
)

func allowed(b []byte, pos int) bool {
	if pos > len(b) {
		return false
	}
	ls := bytes.LastIndexByte(b[:pos], '\n') + 1
	le := len(b)
	if i := bytes.IndexByte(b[pos:], '\n'); i >= 0 {
		le = pos + i
	}
	return bytes.Contains(b[ls:le], allowMarker) || bytes.Contains(b[ls:le], allowMarker16)
}
