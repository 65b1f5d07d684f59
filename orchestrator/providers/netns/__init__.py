"""The netns provider: each host a network namespace, each LAN a bridge inside a namespace the lab owns."""
