package inference

import "net/http"

// Cacher is an optional ability of an Exchange: a response cache in front
// of the model's instances (the gateway's, when the deployment's manifest
// turns it on).
type Cacher interface {
	// Cached looks up an infer request whose body has been read. done
	// means w was answered (from the cache) and the exchange finished;
	// otherwise the handler answers through the returned writer, which
	// may keep a successful answer. Called on the request's goroutine.
	Cached(w http.ResponseWriter, r *http.Request, body []byte) (_ http.ResponseWriter, done bool)
}

// cached asks the exchange w belongs to, when it is a Cacher, to answer r
// from its cache.
func cached(w http.ResponseWriter, r *http.Request, body []byte) (http.ResponseWriter, bool) {
	c, ok := w.(*restCall)
	if !ok {
		return w, false
	}
	ca, ok := c.ex.(Cacher)
	if !ok {
		return w, false
	}
	return ca.Cached(w, r, body)
}
