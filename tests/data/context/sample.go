package shapes

import (
	"errors"
	"fmt"
	"math"
)

// Shape is anything with an area.
type Shape interface {
	Area() float64
	Name() string
}

type Circle struct {
	Radius float64
}

func (c Circle) Area() float64 {
	return math.Pi * c.Radius * c.Radius
}

func (c Circle) Name() string {
	return fmt.Sprintf("circle(r=%.1f)", c.Radius)
}

type Rect struct {
	W, H float64
}

func (r Rect) Area() float64 {
	return r.W * r.H
}

func (r Rect) Name() string {
	return "rect"
}

var ErrEmpty = errors.New("no shapes")

func Largest(shapes []Shape) (Shape, error) {
	if len(shapes) == 0 {
		return nil, ErrEmpty
	}
	best := shapes[0]
	for _, s := range shapes[1:] {
		if s.Area() > best.Area() {
			best = s
		}
	}
	return best, nil
}

func Total(shapes []Shape) float64 {
	sum := 0.0
	for _, s := range shapes {
		sum += s.Area()
	}
	return sum
}
