// Package uplot carries uPlot (https://github.com/leeoniya/uPlot, MIT
// licence in LICENSE), the charting library that the dashboard and bench's
// HTML report draw with. The files are copied from the npm package by
// scripts/vendor-js.sh and embedded, so nothing is fetched at run time.
package uplot

import (
	_ "embed"
	"html/template"
	"strings"
)

// JS is uPlot's minified browser build; it defines the global uPlot.
//
//go:embed uPlot.iife.min.js
var JS string

// CSS is uPlot's stylesheet.
//
//go:embed uPlot.min.css
var CSS string

//go:embed VERSION
var version string

// Version is the vendored uPlot version.
var Version = strings.TrimSpace(version)

// InlineJS returns JS for a <script> element of an html/template page.
// The library is trusted, vendored code, not data.
func InlineJS() template.JS { return template.JS(JS) }

// InlineCSS returns CSS for a <style> element of an html/template page.
func InlineCSS() template.CSS { return template.CSS(CSS) }
