"""Alert Driver: the offline-first alert queue (enqueue, claim, sent / retry / failed)."""
ACCESS = "READ+WRITE"
