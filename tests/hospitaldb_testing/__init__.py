"""What the tests share: databases, flow runs, alert receivers, independent answers, the deployment path."""
