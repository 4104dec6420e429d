package redisstore

// Queued is how many calls of s wait for a batch.
func Queued(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}
