package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode"
)

// Errors of checkStrictJSON.
var (
	errJSONTrailing  = errors.New("data after the JSON value")
	errJSONDuplicate = errors.New("a key given twice in one object")
)

// checkStrictJSON refuses what encoding/json takes without a word while
// another reader of the same body (a proxy that checks it, an audit of the
// request) may take it otherwise: data after the first value, and a key
// given twice in one object, also in another case ("role" and "ROLE"):
// encoding/json matches names without regard to case and keeps the last.
// b is one bounded request body, already decoded once.
func checkStrictJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	// One frame per open object or array: an object's keys so far, and
	// whether its next token is a key.
	type frame struct {
		keys    map[string]bool
		wantKey bool
	}
	var stack []*frame
	values := 0 // top-level values begun
	for {
		t, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if values == 0 || len(stack) > 0 {
				return io.ErrUnexpectedEOF // no value, or one cut short
			}
			return nil
		}
		if err != nil {
			if values > 0 && len(stack) == 0 {
				return errJSONTrailing
			}
			return err
		}
		if len(stack) == 0 {
			if values++; values > 1 {
				return errJSONTrailing
			}
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.keys != nil && top.wantKey {
			if d, ok := t.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k, _ := t.(string)
			f := foldKey(k)
			if top.keys[f] {
				return errJSONDuplicate
			}
			top.keys[f] = true
			top.wantKey = false
			continue
		}
		if top != nil && top.keys != nil {
			top.wantKey = true // this token is (or opens) the key's value
		}
		switch t {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

// foldKey maps a key to one representative of the keys encoding/json
// takes for it (bytes.EqualFold: each rune's simple case folding orbit,
// so that "K", "k" and the Kelvin sign are one).
func foldKey(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		b.WriteRune(m)
	}
	return b.String()
}
