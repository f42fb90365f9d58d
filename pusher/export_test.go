package pusher

// Settings is what p really uses for the settings a person can change, by
// the name of tagpush's option for each, as typed values to compare with a
// parsed configuration.
func Settings(p *Pusher) map[string]any {
	c := p.cfg
	return map[string]any{
		"concurrency":     c.concurrency,
		"adaptive":        c.adaptive,
		"overwrite":       c.overwrite,
		"atomic":          c.atomic,
		"max-attempts":    c.maxAttempts,
		"retry-delay":     c.retryDelay,
		"max-retry-delay": c.maxRetryDelay,
		"timeout":         c.timeout,
	}
}
