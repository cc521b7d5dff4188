package token

import "bytes"

// GitHub's tokens (installation "ghs_", user-to-server "ghu_", personal
// "ghp_", OAuth "gho_", refresh "ghr_") are the prefix and 36 base62
// characters. mayfly mints installation tokens for jobs and sends them
// upstream, and an upstream may quote one in an error: Redact keeps them
// out of logs and audit entries as it keeps mayfly's own. Only their shape
// is known here (the scanner checks their checksum); a look-alike costs a
// hint in place of random text.
const gitHubLen = 4 + 36

var gitHubStem = []byte("gh")

// findGitHub returns the offsets of every GitHub-token-shaped value in b,
// whatever is around it, as Find takes mayfly's.
func findGitHub(b []byte) []int {
	var out []int
	i := 0
	for {
		j := bytes.Index(b[i:], gitHubStem)
		if j < 0 {
			return out
		}
		start := i + j
		i = start + len(gitHubStem)
		if start+gitHubLen > len(b) || b[start+3] != '_' || !gitHubKind(b[start+2]) || !allBase62(b[start+4:start+gitHubLen]) {
			continue
		}
		out = append(out, start)
		i = start + gitHubLen
	}
}

// gitHubKind: the letter after "gh" in GitHub's token prefixes.
func gitHubKind(c byte) bool {
	return c == 's' || c == 'u' || c == 'p' || c == 'o' || c == 'r'
}

// gitHubHint is Hint for a GitHub token: its prefix and four characters,
// as the minted credential's hint shows it.
func gitHubHint(t []byte) string {
	return string(t[:8]) + "…"
}
