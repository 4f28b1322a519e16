package dashboard

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"strings"

	"tandem/internal/uplot"
)

//go:embed assets
var assets embed.FS

// TokenCookie is the cookie that carries the admin token for a browser: a
// page opened as /ui/?token=TOKEN sets it (HttpOnly, SameSite=Strict,
// Path=/ui) and is sent on without the token in its address. api.Protect
// accepts it on reads under /ui only.
const TokenCookie = "tandem_ui_token"

// Mount adds the dashboard's routes to the control API through handle
// (the admin server's Handle), behind the control API's authentication:
//
//	GET /ui/                  the overview page
//	GET /ui/d/{name}          a deployment's page
//	GET /ui/api/overview      an Overview (?d=NAME for one deployment)
//	GET /ui/assets/...        the embedded scripts and styles
func (d *Dashboard) Mount(handle func(pattern string, h http.Handler)) {
	static, _ := fs.Sub(assets, "assets")
	page, _ := fs.ReadFile(static, "index.html")
	files := http.StripPrefix("/ui/assets/", http.FileServerFS(static))
	handle("GET /ui", http.RedirectHandler("/ui/", http.StatusFound))
	handle("GET /ui/{$}", d.page(page))
	handle("GET /ui/d/{name}", d.page(page))
	handle("GET /ui/api/overview", secure(http.HandlerFunc(d.serveOverview)))
	handle("GET /ui/assets/uPlot.js", asset("text/javascript; charset=utf-8", uplot.JS))
	handle("GET /ui/assets/uPlot.css", asset("text/css; charset=utf-8", uplot.CSS))
	handle("GET /ui/assets/", secure(files))
}

// page serves the single-page dashboard; the script reads which page it
// is from the address. A ?token= (already checked by api.Protect) becomes
// the cookie, and the address loses it.
func (d *Dashboard) page(body []byte) http.Handler {
	return secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := r.URL.Query().Get("token"); tok != "" {
			http.SetCookie(w, &http.Cookie{Name: TokenCookie, Value: tok, Path: "/ui", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			q := r.URL.Query()
			q.Del("token")
			u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
			http.Redirect(w, r, u.String(), http.StatusSeeOther)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(body)
	}))
}

func (d *Dashboard) serveOverview(w http.ResponseWriter, r *http.Request) {
	o := d.Overview(strings.TrimSpace(r.URL.Query().Get("d")))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(o)
}

func asset(contentType, body string) http.Handler {
	return secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Write([]byte(body))
	}))
}

// secure sets the headers every dashboard answer carries: nothing from
// elsewhere, no framing, no referrer (an address may hold ?token=).
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "+
			"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}
