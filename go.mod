module github.com/brokerkit/broker

go 1.26
