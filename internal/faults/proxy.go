package faults

import (
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
)

type httputilProxy struct {
	target *url.URL
	once   sync.Once
	rp     *httputil.ReverseProxy
}

func (p *httputilProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.once.Do(func() {
		p.rp = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.SetURL(p.target)
				pr.Out.Host = pr.In.Host
			},
			Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
			// A client that gives up mid-request is part of the tests, not news.
			ErrorLog: log.New(io.Discard, "", 0),
		}
	})
	p.rp.ServeHTTP(w, r)
}
