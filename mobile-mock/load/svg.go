package load

import (
	"fmt"
	"io"
	"math"
	"os"
	"text/template"
)

// WriteSVG draws the run's latency histograms (checkout, and confirmed -> ticket at the
// terminal) on a logarithmic time axis, with the p50/p95/p99 marks, as an SVG image at path.
func (res *Result) WriteSVG(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := res.renderSVG(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

const (
	svgWidth   = 960
	headingH   = 20
	panelH     = 260
	plotLeft   = 70
	plotRight  = 30
	plotTop    = 50
	plotBottom = 50
	binsPerOct = 4 // display bins per doubling of latency
)

type svgPanel struct {
	Title  string
	Y      int // panel's top
	Plot   svgRect
	Bars   []svgRect
	XTicks []svgTick
	YTicks []svgTick
	Marks  []svgMark
	Empty  bool
}

type svgRect struct{ X, Y, W, H float64 }

type svgTick struct {
	Pos   float64
	Label string
}

type svgMark struct {
	X      float64
	Label  string
	Color  string
	LabelY float64
	// Anchor and DX put the label right of the line, or left of it near the plot's right edge.
	Anchor string
	DX     int
}

type svgDoc struct {
	Width, Height int
	Heading       string
	Panels        []svgPanel
}

var svgTemplate = template.Must(template.New("svg").Parse(`<svg xmlns="http://www.w3.org/2000/svg" width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="12" y="22" font-size="13" fill="#444">{{.Heading}}</text>
{{range $p := .Panels}}<g>
<text x="12" y="{{$p.Y}}" dy="36" font-size="15" font-weight="bold" fill="#222">{{$p.Title}}</text>
<rect x="{{$p.Plot.X}}" y="{{$p.Plot.Y}}" width="{{$p.Plot.W}}" height="{{$p.Plot.H}}" fill="#fafafa" stroke="#ccc"/>
{{if $p.Empty}}<text x="{{$p.Plot.X}}" y="{{$p.Plot.Y}}" dx="20" dy="40" fill="#888">no samples</text>
{{end}}{{range $p.YTicks}}<text x="{{$p.Plot.X}}" y="{{printf "%.1f" .Pos}}" dx="-6" dy="4" text-anchor="end" fill="#666">{{.Label}}</text>
{{end}}{{range $p.XTicks}}<line x1="{{printf "%.1f" .Pos}}" x2="{{printf "%.1f" .Pos}}" y1="{{$p.Plot.Y}}" y2="{{$p.Plot.Bottom}}" stroke="#e4e4e4"/><text x="{{printf "%.1f" .Pos}}" y="{{$p.Plot.Bottom}}" dy="16" text-anchor="middle" fill="#666">{{.Label}}</text>
{{end}}{{range $p.Bars}}<rect x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.1f" .W}}" height="{{printf "%.1f" .H}}" fill="#4a7fb5"/>
{{end}}{{range $p.Marks}}<line x1="{{printf "%.1f" .X}}" x2="{{printf "%.1f" .X}}" y1="{{$p.Plot.Y}}" y2="{{$p.Plot.Bottom}}" stroke="{{.Color}}" stroke-width="1.5" stroke-dasharray="5,3"/><text x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .LabelY}}" dx="{{.DX}}" text-anchor="{{.Anchor}}" fill="{{.Color}}">{{.Label}}</text>
{{end}}<text x="{{$p.Plot.Right}}" y="{{$p.Plot.Bottom}}" dy="34" text-anchor="end" fill="#666">latency (ms, log scale)</text>
</g>
{{end}}</svg>
`))

// Bottom and Right are the plot's far edges, for the template.
func (r svgRect) Bottom() float64 { return r.Y + r.H }
func (r svgRect) Right() float64  { return r.X + r.W }

func (res *Result) renderSVG(w io.Writer) error {
	mode := "menu orders spread over the chain"
	if res.HotSKU != "" {
		mode = "hot SKU " + res.HotSKU
	}
	doc := svgDoc{
		Width:   svgWidth,
		Heading: fmt.Sprintf("Handoff load · %d shoppers · %.0fs · %s · %.1f orders/s", res.Shoppers, res.WindowSeconds, mode, res.OrdersPerSecond),
	}
	for i, p := range []struct {
		title string
		h     *Histogram
		s     Stats
	}{
		{"Checkout latency (gRPC-web, as the shopper sees it)", res.checkout, res.CheckoutLatency},
		{"Confirmed → ticket at the store's terminal", res.toTicket, res.ConfirmedToTicket},
	} {
		doc.Panels = append(doc.Panels, panel(p.title, headingH+i*panelH, p.h, p.s))
	}
	doc.Height = headingH + len(doc.Panels)*panelH
	return svgTemplate.Execute(w, doc)
}

func panel(title string, top int, h *Histogram, s Stats) svgPanel {
	p := svgPanel{
		Title: fmt.Sprintf("%s: n=%d", title, s.Count),
		Y:     top,
		Plot:  svgRect{X: plotLeft, Y: float64(top + plotTop), W: svgWidth - plotLeft - plotRight, H: panelH - plotTop - plotBottom},
	}
	var buckets []Bucket
	if h != nil {
		buckets = h.Buckets()
	}
	if len(buckets) == 0 {
		p.Empty = true
		return p
	}
	// Display bins of a quarter doubling each, from the fastest to the slowest sample.
	lowest := math.Max(buckets[0].LowMS, 0.01)
	highest := math.Max(buckets[len(buckets)-1].HighMS, lowest*2)
	k0 := math.Floor(binsPerOct * math.Log2(lowest))
	k1 := math.Ceil(binsPerOct * math.Log2(highest))
	bins := make([]uint64, int(k1-k0))
	for _, b := range buckets {
		mid := math.Max((b.LowMS+b.HighMS)/2, lowest)
		i := int(math.Floor(binsPerOct*math.Log2(mid)) - k0)
		bins[min(max(i, 0), len(bins)-1)] += b.Count
	}
	var peak uint64
	for _, c := range bins {
		peak = max(peak, c)
	}
	x := func(v float64) float64 { // ms -> pixels
		return p.Plot.X + (binsPerOct*math.Log2(v)-k0)/(k1-k0)*p.Plot.W
	}
	barW := p.Plot.W / float64(len(bins))
	for i, c := range bins {
		if c == 0 {
			continue
		}
		bh := float64(c) / float64(peak) * (p.Plot.H - 20)
		p.Bars = append(p.Bars, svgRect{X: p.Plot.X + float64(i)*barW + 1, Y: p.Plot.Bottom() - bh, W: math.Max(barW-2, 1), H: bh})
	}
	for decade := 0.001; decade <= 1e6; decade *= 10 {
		for _, m := range []float64{1, 2, 5} {
			v := decade * m
			if v >= math.Exp2(k0/binsPerOct) && v <= math.Exp2(k1/binsPerOct) {
				p.XTicks = append(p.XTicks, svgTick{Pos: x(v), Label: trimFloat(v)})
			}
		}
	}
	for _, frac := range []float64{0.5, 1} {
		p.YTicks = append(p.YTicks, svgTick{Pos: p.Plot.Bottom() - frac*(p.Plot.H-20), Label: fmt.Sprint(uint64(frac * float64(peak)))})
	}
	for i, m := range []struct {
		name  string
		v     float64
		color string
	}{{"p50", s.P50MS, "#2a9d5c"}, {"p95", s.P95MS, "#d98c1f"}, {"p99", s.P99MS, "#c0392b"}} {
		mark := svgMark{
			X: x(math.Max(m.v, lowest)), Label: fmt.Sprintf("%s %s", m.name, fmtMS(m.v)), Color: m.color,
			LabelY: p.Plot.Y + 14 + float64(i)*14, Anchor: "start", DX: 4,
		}
		if mark.X > p.Plot.X+0.8*p.Plot.W {
			mark.Anchor, mark.DX = "end", -4
		}
		p.Marks = append(p.Marks, mark)
	}
	return p
}

func trimFloat(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%g", v)
}
