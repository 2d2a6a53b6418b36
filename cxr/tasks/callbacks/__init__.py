"""Lightning callbacks the tasks train with: resume points, non-finite guards, speed options, checkpoint metadata."""
