module layoutexp

go 1.26
