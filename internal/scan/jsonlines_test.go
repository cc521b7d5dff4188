package scan

import (
	"testing"
)

// A notebook's outputs and a JSON log hold what a program printed as JSON
// strings, each line ending in an escaped line end ("API_TOKEN=…\n"). The
// escape ends an unquoted value as the line end would: gitleaks' generic
// rule ends a value at \n or \r the same way.
func TestGenericValueBeforeEscapedLineEnd(t *testing.T) {
	g := newGen(71)
	pw := "Xy7" + g.str(abcB62, 17)
	tests := []struct {
		name, file, text string
		want             string // the secret; "" for none
	}{
		{"notebook stream output", "train.ipynb", `{"outputs":[{"name":"stdout","output_type":"stream","text":["API_TOKEN=` + pw + `\n","done\n"]}]}`, pw},
		{"JSON log, CRLF", "job.json", `{"log":"export DB_PASSWORD=` + pw + `\r\n","stream":"stdout"}`, pw},
		{"JSON log, tab after", "job.json", `{"log":"SECRET_KEY=` + pw + `\tset"}`, pw},
		{"last line, no escape", "train.ipynb", `{"text":["API_TOKEN=` + pw + `"]}`, pw},
		{"escaped line end, then a short word", "job.json", `{"log":"API_TOKEN=\nabc"}`, ""},
	}
	s := newScanner(t, Options{Enable: []string{"generic-secret"}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := s.ScanBytes(tt.file, []byte(tt.text+"\n"))
			var got []string
			for _, f := range fs {
				got = append(got, f.Secret)
			}
			switch {
			case tt.want == "" && len(fs) > 0:
				t.Fatalf("findings %q, want none", got)
			case tt.want != "" && (len(fs) != 1 || fs[0].Secret != tt.want):
				t.Fatalf("findings %q, want %q", got, tt.want)
			}
		})
	}
}
