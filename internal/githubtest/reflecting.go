package githubtest

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// Reflecting runs, on a loopback port until stop, an API whose every
// answer is malformed: its header block carries the request's
// Authorization value on a line without a colon, as a broken proxy, a
// GitHub Enterprise front end's error page or a debugging proxy sends
// back. That is the answer whose transport error quotes the credential a
// caller sent. sent, when not nil, is given each Authorization value it
// can take without blocking.
func Reflecting(sent chan<- string) (url string, stop func() error, err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				a := req.Header.Get("Authorization")
				select {
				case sent <- a: // a nil channel never takes it
				default:
				}
				c.Write([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nupstream rejected " + a + "\r\n\r\n"))
			}(c)
		}
	}()
	return "http://" + l.Addr().String(), l.Close, nil
}
