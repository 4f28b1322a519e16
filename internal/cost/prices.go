package cost

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"

	"tandem/internal/manifest"
)

// Prices is a price table: what an instance costs per second or hour under
// each mode, and what size an instance is taken to be when its manifest
// gives no resources. prices/default.yaml documents the defaults and their
// sources; DefaultPrices returns the same values.
type Prices struct {
	// Currency labels amounts in reports ("USD").
	Currency string `yaml:"currency" json:"currency"`
	// Instance is the size assumed for a manifest without resources.
	Instance InstanceSize `yaml:"instance" json:"instance"`
	// Serverless is billed for instance time while serving, and per request.
	Serverless ServerlessPrices `yaml:"serverless" json:"serverless"`
	// Dedicated is billed for every second an instance runs.
	Dedicated DedicatedPrices `yaml:"dedicated" json:"dedicated"`
	// Reserved is committed capacity (a savings plan), what a hybrid
	// deployment's floor tier is billed at; its burst tier pays Dedicated
	// (on-demand) prices.
	Reserved DedicatedPrices `yaml:"reserved" json:"reserved"`
	// Template prices a deployment's template process (runtime.template)
	// as the idle memory it holds, under either mode.
	Template TemplatePrices `yaml:"template" json:"template"`
}

// TemplatePrices price a template process: it sleeps until asked to fork,
// so it costs the memory it keeps, per GiB-hour of the deployment's
// instance size, and no CPU.
type TemplatePrices struct {
	GBHour float64 `yaml:"gb_hour" json:"gb_hour"`
}

// InstanceSize is the default size of one instance.
type InstanceSize struct {
	CPU    float64           `yaml:"cpu" json:"cpu"`
	Memory manifest.ByteSize `yaml:"memory" json:"memory"`
}

// ServerlessPrices are a serverless platform's list prices (AWS Lambda's by
// default): memory-seconds of instance time while serving, GPU-seconds, and
// a fee per million requests.
type ServerlessPrices struct {
	GBSecond           float64 `yaml:"gb_second" json:"gb_second"`
	GPUSecond          float64 `yaml:"gpu_second" json:"gpu_second"`
	PerMillionRequests float64 `yaml:"per_million_requests" json:"per_million_requests"`
	// BillStartup bills the time instances spend starting, as Lambda bills
	// its init phase and Cloud Run its container start-up.
	BillStartup bool `yaml:"bill_startup" json:"bill_startup"`
}

// DedicatedPrices are a container platform's list prices (AWS Fargate's by
// default) for an instance that runs whether or not it serves.
type DedicatedPrices struct {
	VCPUHour float64 `yaml:"vcpu_hour" json:"vcpu_hour"`
	GBHour   float64 `yaml:"gb_hour" json:"gb_hour"`
	GPUHour  float64 `yaml:"gpu_hour" json:"gpu_hour"`
}

// ErrInvalidPrices is matched by errors.Is for a price table that does not
// parse or validate.
var ErrInvalidPrices = errors.New("invalid price table")

// DefaultPrices returns the built-in price table, the one
// prices/default.yaml writes out (a test keeps the two equal).
func DefaultPrices() *Prices {
	return &Prices{
		Currency: "USD",
		Instance: InstanceSize{CPU: 1, Memory: 2 << 30},
		Serverless: ServerlessPrices{
			GBSecond:           0.0000166667,
			GPUSecond:          0.0001867,
			PerMillionRequests: 0.20,
			BillStartup:        true,
		},
		Dedicated: DedicatedPrices{
			VCPUHour: 0.04048,
			GBHour:   0.004445,
			GPUHour:  0.526,
		},
		Reserved: DedicatedPrices{
			VCPUHour: 0.04048,
			GBHour:   0.004445,
			GPUHour:  0.526,
		},
		Template: TemplatePrices{GBHour: 0.004445},
	}
}

// LoadPrices reads a price table file. Fields it leaves out keep their
// default values.
func LoadPrices(path string) (*Prices, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("prices: %w", err)
	}
	p, err := ParsePrices(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// ParsePrices decodes a price table over the defaults: unknown fields are
// errors and every price must be a number that is not negative.
func ParsePrices(data []byte) (*Prices, error) {
	p := DefaultPrices()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(p); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %v", ErrInvalidPrices, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// Validate reports every negative price or size.
func (p *Prices) Validate() error {
	var errs []error
	check := func(field string, v float64) {
		if !(v >= 0) {
			errs = append(errs, fmt.Errorf("%s: %v must be a number, not negative", field, v))
		}
	}
	if p.Currency == "" {
		errs = append(errs, errors.New("currency: required"))
	}
	check("instance.cpu", p.Instance.CPU)
	check("instance.memory", float64(p.Instance.Memory))
	check("serverless.gb_second", p.Serverless.GBSecond)
	check("serverless.gpu_second", p.Serverless.GPUSecond)
	check("serverless.per_million_requests", p.Serverless.PerMillionRequests)
	check("dedicated.vcpu_hour", p.Dedicated.VCPUHour)
	check("dedicated.gb_hour", p.Dedicated.GBHour)
	check("dedicated.gpu_hour", p.Dedicated.GPUHour)
	check("reserved.vcpu_hour", p.Reserved.VCPUHour)
	check("reserved.gb_hour", p.Reserved.GBHour)
	check("reserved.gpu_hour", p.Reserved.GPUHour)
	check("template.gb_hour", p.Template.GBHour)
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidPrices, errors.Join(errs...))
	}
	return nil
}

// Size is what one instance holds, in the units prices use.
type Size struct {
	CPU  float64 `json:"cpu"`
	GB   float64 `json:"gb"` // GiB, as Lambda and Fargate count memory
	GPUs float64 `json:"gpus"`
}

// SizeOf returns the size of one instance with resources r: what r sets,
// and the price table's default instance for what it leaves at zero.
func (p *Prices) SizeOf(r manifest.Resources) Size {
	s := Size{CPU: r.CPU, GB: float64(r.Memory) / (1 << 30), GPUs: float64(r.GPUs)}
	if s.CPU == 0 {
		s.CPU = p.Instance.CPU
	}
	if s.GB == 0 {
		s.GB = float64(p.Instance.Memory) / (1 << 30)
	}
	return s
}

// Modes are the deployment modes a cost can be priced as, in report order.
var Modes = []manifest.Mode{manifest.Serverless, manifest.Dedicated}

// Cost is what usage u costs priced as mode, as it happened: dedicated pays
// for every second its instances ran; serverless pays for instance time
// while serving (and starting, when BillStartup is set) and for requests.
// A mode tandem does not know is priced as serverless.
func (p *Prices) Cost(mode manifest.Mode, u Usage) float64 {
	switch mode {
	case manifest.Dedicated:
		return p.dedicated(u.Total()) + p.template(u.Template)
	case manifest.Hybrid:
		floor, burst := p.Tiers(u)
		return floor + burst + p.template(u.Template)
	}
	return p.serverless(u) + p.template(u.Template)
}

// Tiers splits a hybrid deployment's cost: its floor tier pays for every
// second its instances run, at Reserved prices (capacity one commits to);
// its burst tier is billed as serverless: its serving time (and starting
// time, with BillStartup) and its share of the requests, in proportion to
// its share of the busy time.
func (p *Prices) Tiers(u Usage) (floor, burst float64) {
	floor = price(p.Reserved, u.Total().Minus(u.Burst.Total()))
	billed := u.Burst.Busy
	if p.Serverless.BillStartup {
		billed = billed.Plus(u.Burst.Starting)
	}
	s := p.Serverless
	burst = billed.GB*s.GBSecond + billed.GPU*s.GPUSecond
	if u.Busy.Seconds > 0 {
		share := min(u.Burst.Busy.Seconds/u.Busy.Seconds, 1)
		burst += float64(u.Requests) * share * s.PerMillionRequests / 1e6
	}
	return floor, burst
}

// CostIf is what the same traffic would have cost under mode when it ran
// under another: for dedicated, the instance time it had, but never less
// than Floor (the minimum a dedicated deployment keeps warm for as long as
// it exists); for serverless, its serving time and requests. The cold
// starts serverless would have added to a dedicated deployment are not
// known from its usage: `tandem recommend` simulates them.
func (p *Prices) CostIf(mode manifest.Mode, u Usage) float64 {
	if mode == manifest.Dedicated {
		t := u.Total()
		if u.Floor.Seconds > t.Seconds {
			t = u.Floor
		}
		return p.dedicated(t) + p.template(u.Template)
	}
	return p.serverless(u) + p.template(u.Template)
}

// IdleCost is the part of Cost(mode, u) spent on instances that were up
// and serving nothing, and on templates (which never serve).
func (p *Prices) IdleCost(mode manifest.Mode, u Usage) float64 {
	switch mode {
	case manifest.Dedicated:
		return p.dedicated(u.Idle) + p.template(u.Template)
	case manifest.Hybrid:
		// The burst tier's idle time is not billed (as serverless).
		return price(p.Reserved, u.Idle.Minus(u.Burst.Idle)) + p.template(u.Template)
	}
	return p.template(u.Template)
}

// template is what template processes' time a costs: their memory.
func (p *Prices) template(a Amount) float64 {
	return a.GB * p.Template.GBHour / 3600
}

func (p *Prices) dedicated(a Amount) float64 { return price(p.Dedicated, a) }

func price(d DedicatedPrices, a Amount) float64 {
	return (a.CPU*d.VCPUHour + a.GB*d.GBHour + a.GPU*d.GPUHour) / 3600
}

func (p *Prices) serverless(u Usage) float64 {
	billed := u.Busy
	if p.Serverless.BillStartup {
		billed = billed.Plus(u.Starting)
	}
	s := p.Serverless
	return billed.GB*s.GBSecond + billed.GPU*s.GPUSecond + float64(u.Requests)*s.PerMillionRequests/1e6
}
