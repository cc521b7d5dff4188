package scan

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Rule is a detection rule from a rules file. Regex is RE2 syntax; the
// secret is its group named "secret", else group SecretGroup, else group
// 1, else the whole match. Keywords (found case-insensitively) let the
// regexp run only on the line around them; a rule without keywords runs
// its regexp over everything, which is slow. Entropy, when set, is the
// minimum Shannon entropy (bits per byte) of the secret.
type Rule struct {
	ID          string   `yaml:"id" json:"id"`
	Description string   `yaml:"description" json:"description"`
	Regex       string   `yaml:"regex" json:"regex"`
	Keywords    []string `yaml:"keywords" json:"keywords"`
	Entropy     float64  `yaml:"entropy" json:"entropy"`
	SecretGroup int      `yaml:"secret_group" json:"secret_group"`
}

var ruleID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}$`)

func (cr Rule) compile() (*rule, error) {
	if !ruleID.MatchString(cr.ID) {
		return nil, fmt.Errorf("scan: rule id %q: want letters, digits, '.', '_' or '-'", cr.ID)
	}
	if cr.Regex == "" {
		return nil, fmt.Errorf("scan: rule %s: no regex", cr.ID)
	}
	re, err := regexp.Compile(cr.Regex)
	if err != nil {
		return nil, fmt.Errorf("scan: rule %s: %w", cr.ID, err)
	}
	r := &rule{id: cr.ID, desc: cr.Description, re: re, entropy: cr.Entropy, before: 256, after: 1024, match: regexMatch}
	if r.desc == "" {
		r.desc = cr.ID
	}
	r.group = secretGroup(re, cr.SecretGroup)
	for _, k := range cr.Keywords {
		if k = strings.TrimSpace(k); k != "" {
			r.keywords = append(r.keywords, keyword{lit: k})
		}
	}
	return r, nil
}

// LoadRules reads rules from a YAML or TOML file (by extension; TOML for
// ".toml"). YAML: a list of rules, or a mapping with a "rules" list. TOML:
// [[rules]] tables, as gitleaks writes them (id, description, regex,
// keywords, entropy, secretGroup).
func LoadRules(path string) ([]Rule, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scan: reading rules: %w", err)
	}
	format := "yaml"
	if strings.EqualFold(filepath.Ext(path), ".toml") {
		format = "toml"
	}
	return ParseRules(data, format)
}

// ParseRules parses rules in format "yaml" or "toml" and checks that each compiles.
func ParseRules(data []byte, format string) ([]Rule, error) {
	var rules []Rule
	switch format {
	case "yaml", "yml":
		trimmed := bytes.TrimSpace(data)
		if bytes.HasPrefix(trimmed, []byte("-")) || bytes.HasPrefix(trimmed, []byte("[")) {
			if err := yaml.Unmarshal(data, &rules); err != nil {
				return nil, fmt.Errorf("scan: rules file: %w", err)
			}
		} else {
			var doc struct {
				Rules []Rule `yaml:"rules"`
			}
			if err := yaml.Unmarshal(data, &doc); err != nil {
				return nil, fmt.Errorf("scan: rules file: %w", err)
			}
			rules = doc.Rules
		}
	case "toml":
		var err error
		if rules, err = parseTOMLRules(string(data)); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("scan: unknown rules format %q", format)
	}
	if len(rules) == 0 {
		return nil, errors.New("scan: rules file holds no rules")
	}
	for _, r := range rules {
		if _, err := r.compile(); err != nil {
			return nil, err
		}
	}
	return rules, nil
}

// parseTOMLRules reads the subset of TOML rules files use: [[rules]]
// tables of keys whose values are strings (basic, literal, multi-line),
// numbers or arrays of strings. Other tables are skipped.
func parseTOMLRules(src string) ([]Rule, error) {
	var rules []Rule
	var cur *Rule
	inRules := false
	p := &tomlParser{s: src}
	for {
		p.skipSpaceAndComments()
		if p.eof() {
			break
		}
		if p.peek() == '[' {
			hdr := p.line()
			name := strings.TrimSpace(strings.Trim(strings.TrimSpace(stripComment(hdr)), "[]"))
			inRules = name == "rules" && strings.HasPrefix(strings.TrimSpace(hdr), "[[")
			if inRules {
				rules = append(rules, Rule{})
				cur = &rules[len(rules)-1]
			}
			continue
		}
		key, val, err := p.keyValue()
		if err != nil {
			return nil, fmt.Errorf("scan: rules file line %d: %w", p.lineNo(), err)
		}
		if !inRules {
			continue
		}
		switch key {
		case "id":
			cur.ID, _ = val.(string)
		case "description":
			cur.Description, _ = val.(string)
		case "regex":
			cur.Regex, _ = val.(string)
		case "keywords":
			if a, ok := val.([]string); ok {
				cur.Keywords = a
			}
		case "entropy":
			cur.Entropy, _ = val.(float64)
		case "secretGroup", "secret_group":
			if f, ok := val.(float64); ok {
				cur.SecretGroup = int(f)
			}
		}
	}
	return rules, nil
}

func stripComment(s string) string {
	if i := strings.IndexByte(s, '#'); i >= 0 {
		return s[:i]
	}
	return s
}

type tomlParser struct {
	s string
	i int
}

func (p *tomlParser) eof() bool  { return p.i >= len(p.s) }
func (p *tomlParser) peek() byte { return p.s[p.i] }
func (p *tomlParser) lineNo() int {
	return strings.Count(p.s[:min(p.i, len(p.s))], "\n") + 1
}

func (p *tomlParser) skipSpaceAndComments() {
	for !p.eof() {
		switch c := p.peek(); {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			p.i++
		case c == '#':
			for !p.eof() && p.peek() != '\n' {
				p.i++
			}
		default:
			return
		}
	}
}

func (p *tomlParser) line() string {
	j := strings.IndexByte(p.s[p.i:], '\n')
	if j < 0 {
		j = len(p.s) - p.i
	}
	l := p.s[p.i : p.i+j]
	p.i += j
	return l
}

func (p *tomlParser) keyValue() (string, any, error) {
	j := strings.IndexByte(p.s[p.i:], '=')
	nl := strings.IndexByte(p.s[p.i:], '\n')
	if j < 0 || nl >= 0 && nl < j {
		return "", nil, errors.New("expected key = value")
	}
	key := strings.Trim(strings.TrimSpace(p.s[p.i:p.i+j]), `"'`)
	p.i += j + 1
	p.skipInline()
	v, err := p.value()
	if err != nil {
		return "", nil, err
	}
	p.skipInline()
	if !p.eof() && p.peek() == '#' {
		p.line()
	}
	if !p.eof() && p.peek() != '\n' && p.peek() != '\r' {
		return "", nil, fmt.Errorf("unexpected text after value of %s", key)
	}
	return key, v, nil
}

func (p *tomlParser) skipInline() {
	for !p.eof() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

func (p *tomlParser) value() (any, error) {
	if p.eof() {
		return nil, errors.New("missing value")
	}
	switch c := p.peek(); {
	case strings.HasPrefix(p.s[p.i:], `'''`):
		return p.delimited(`'''`, false)
	case strings.HasPrefix(p.s[p.i:], `"""`):
		return p.delimited(`"""`, true)
	case c == '\'':
		return p.delimited(`'`, false)
	case c == '"':
		return p.delimited(`"`, true)
	case c == '[':
		p.i++
		var out []string
		for {
			p.skipSpaceAndComments()
			if p.eof() {
				return nil, errors.New("unterminated array")
			}
			if p.peek() == ']' {
				p.i++
				return out, nil
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			s, ok := v.(string)
			if !ok {
				return nil, errors.New("only arrays of strings are supported")
			}
			out = append(out, s)
			p.skipSpaceAndComments()
			if !p.eof() && p.peek() == ',' {
				p.i++
			}
		}
	default:
		j := p.i
		for j < len(p.s) && strings.IndexByte(" \t\r\n#,]", p.s[j]) < 0 {
			j++
		}
		tok := p.s[p.i:j]
		p.i = j
		if tok == "true" || tok == "false" {
			return tok == "true", nil
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(tok, "_", ""), 64)
		if err != nil {
			return nil, fmt.Errorf("bad value %q", tok)
		}
		return f, nil
	}
}

func (p *tomlParser) delimited(d string, escapes bool) (string, error) {
	p.i += len(d)
	multi := len(d) == 3
	if multi && strings.HasPrefix(p.s[p.i:], "\n") {
		p.i++
	} else if multi && strings.HasPrefix(p.s[p.i:], "\r\n") {
		p.i += 2
	}
	var sb strings.Builder
	for !p.eof() {
		if strings.HasPrefix(p.s[p.i:], d) {
			p.i += len(d)
			return sb.String(), nil
		}
		c := p.peek()
		if c == '\n' && !multi {
			break
		}
		if escapes && c == '\\' && p.i+1 < len(p.s) {
			p.i++
			switch e := p.peek(); e {
			case 'n':
				sb.WriteByte('\n')
			case 't':
				sb.WriteByte('\t')
			case 'r':
				sb.WriteByte('\r')
			case '"', '\\':
				sb.WriteByte(e)
			case 'u', 'U':
				n := 4
				if e == 'U' {
					n = 8
				}
				if p.i+n >= len(p.s) {
					return "", errors.New("bad unicode escape")
				}
				v, err := strconv.ParseUint(p.s[p.i+1:p.i+1+n], 16, 32)
				if err != nil {
					return "", errors.New("bad unicode escape")
				}
				sb.WriteRune(rune(v))
				p.i += n
			default:
				return "", fmt.Errorf("bad escape \\%c", e)
			}
			p.i++
			continue
		}
		sb.WriteByte(c)
		p.i++
	}
	return "", errors.New("unterminated string")
}
