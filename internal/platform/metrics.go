package platform

// DelayBuckets are the histogram buckets, in seconds, of the pipeline's delays (an event's commit in
// the store to its publish, or to its projection): fine in the milliseconds where a live pipeline is,
// coarse up to the minutes of a catch-up.
func DelayBuckets() []float64 {
	return []float64{0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
		0.075, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 300}
}
