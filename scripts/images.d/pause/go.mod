module acm-platform/pause

go 1.26.0
