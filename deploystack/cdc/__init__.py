"""What runs inside the CDC's runner container: the queue of verified pushes and the loop that deploys them."""
